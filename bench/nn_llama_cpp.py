"""llama.cpp (llama-cpp-python, built from its PyPI source package) on the
same GGUF file, prompt and options as bench/nn gives Tern: greedy, one
thread per core, streamed. Prints the answer on stdout and
`stats: first_ms=F rest_ms=R rest_tokens=N` on stderr, measured as the
Tern guest measures them."""
import sys, time
import llama_cpp

model, system, user, n_predict = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
llm = llama_cpp.Llama(model_path=model, n_ctx=4096, n_threads=2, n_batch=512, verbose=False)
prompt = (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
          "<|im_start|>assistant\n")
started = time.perf_counter()
first = None
pieces = []
for chunk in llm.create_completion(prompt, max_tokens=n_predict, temperature=0.0, top_k=1, stream=True):
    if first is None:
        first = time.perf_counter() - started
    text = chunk["choices"][0]["text"]
    pieces.append(text)
    sys.stdout.write(text)
    sys.stdout.flush()
rest = time.perf_counter() - started - first
print()
print(f"stats: first_ms={first * 1e3:.3f} rest_ms={rest * 1e3:.3f} rest_tokens={len(pieces) - 1}", file=sys.stderr)
