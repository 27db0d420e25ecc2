"""For bench/nn: time to first token of `tern serve`'s chat app (the model
already loaded), and the server's RSS idle and while 8 requests stream at
once. Prints one JSON object."""
import http.client, json, statistics, sys, threading, time

addr, pid, prompt = sys.argv[1], int(sys.argv[2]), sys.argv[3]
host, port = addr.rsplit(":", 1)

def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0

def chat(max_tokens, first_only=False):
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    started = time.perf_counter()
    conn.request("POST", f"/chat?max_tokens={max_tokens}", body=prompt.encode())
    resp = conn.getresponse()
    first = None
    ok = resp.status == 200
    for line in resp:
        if first is None and line.startswith(b"data: "):
            first = time.perf_counter() - started
            if first_only:
                break
        if line.startswith(b"event: done"):
            break
    conn.close()
    return first, ok

chat(2)  # warm the compile cache and the first instance
ttft = [chat(1, first_only=True)[0] * 1e3 for _ in range(5)]
idle = rss()
peak = idle
results = []
threads = [threading.Thread(target=lambda: results.append(chat(64))) for _ in range(8)]
for t in threads:
    t.start()
while any(t.is_alive() for t in threads):
    peak = max(peak, rss())
    time.sleep(0.02)
print(json.dumps({"ttft_ms": statistics.median(ttft), "ttft_runs": len(ttft), "rss_idle": idle,
                  "rss_peak": peak, "all_ok": len(results) == 8 and all(ok for _, ok in results)}))
