//! Makes the host hold memory outside the guest's linear memory, picked by
//! the query: `bodies=N` opens N outgoing request bodies and fills each as
//! far as the host lets it without sending any; `fields=N` builds N header
//! sets of 40 KB each (within the host's limit for one set). Everything is kept until the response, which
//! says how much the host took.
use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{Fields, IncomingRequest, OutgoingRequest, ResponseOutparam};

/// What each body is filled with at most.
const BODY_BYTES: usize = 2 << 20;

struct HostBomb;

impl Guest for HostBomb {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let count = |key| {
            tern_http_guests::query_param(&path, key).map(|n| n.parse::<usize>().expect("a count"))
        };
        let mut kept = Vec::new();
        let mut bytes = 0usize;
        if let Some(n) = count("bodies") {
            for _ in 0..n {
                let request = OutgoingRequest::new(Fields::new());
                let body = request.body().expect("the request body");
                let stream = body.write().expect("the body stream");
                let mut written = 0;
                while written < BODY_BYTES {
                    let permit = stream.check_write().expect("check-write") as usize;
                    if permit == 0 {
                        break;
                    }
                    let chunk = permit.min(BODY_BYTES - written);
                    stream.write(&vec![b'b'; chunk]).expect("write");
                    written += chunk;
                }
                bytes += written;
                kept.push((request, body, stream));
            }
        }
        let mut fields = Vec::new();
        if let Some(n) = count("fields") {
            let value = vec![b'v'; 8 << 10];
            for _ in 0..n {
                let set = Fields::new();
                for i in 0..5 {
                    set.append(&format!("x-filler-{i}"), &value)
                        .expect("append");
                    bytes += value.len();
                }
                fields.push(set);
            }
        }
        let message = format!(
            "held {} bodies, {} header sets, {bytes} bytes",
            kept.len(),
            fields.len()
        );
        // Streams are children of their bodies and go first.
        for (request, body, stream) in kept {
            drop(stream);
            drop(body);
            drop(request);
        }
        drop(fields);
        tern_http_guests::respond_text(out, 200, &message);
    }
}

wasi::http::proxy::export!(HostBomb);
