//! The host functions of the proxy-wasm ABI 0.2.1 (module `env`). Every
//! guest pointer is checked against linear memory before it is read or
//! written (`InvalidMemoryAccess` otherwise), every size the guest hands in
//! is bounded, and nothing here panics on guest input.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::Result;
use wasmtime::{Caller, Linker};

use crate::abi::{self, Status, buffer, map, stream};
use crate::config::LogLevel;
use crate::space::{MetricKind, QueueOwner, QueueResult};
use crate::stream::{
    Headers, HttpCall, LocalResponse, MAX_CALLS_PER_STREAM, MAX_HEADERS_SIZE, MAX_PROPERTIES_SIZE,
    field_size, headers_size,
};
use crate::vm::{ROOT_CONTEXT, VmCtx};

type Ctx<'a> = Caller<'a, VmCtx>;

/// The most a log line may hold; the rest is cut.
const MAX_LOG_LINE: usize = 16 << 10;

/// The most a body may grow to through `set_buffer_bytes`.
const MAX_BODY: usize = 16 << 20;

/// The most a guest may hand in at once (a header map, a call body).
const MAX_INPUT: usize = 16 << 20;

/// Copies `len` bytes at `ptr` out of the guest's memory.
fn read(caller: &mut Ctx<'_>, ptr: u32, len: u32) -> Result<Vec<u8>, Status> {
    if len as usize > MAX_INPUT {
        return Err(Status::BadArgument);
    }
    let memory = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let start = ptr as usize;
    let end = start
        .checked_add(len as usize)
        .ok_or(Status::InvalidMemoryAccess)?;
    memory
        .data(&*caller)
        .get(start..end)
        .map(<[u8]>::to_vec)
        .ok_or(Status::InvalidMemoryAccess)
}

fn read_str(caller: &mut Ctx<'_>, ptr: u32, len: u32) -> Result<String, Status> {
    String::from_utf8(read(caller, ptr, len)?).map_err(|_| Status::BadArgument)
}

/// Writes `bytes` at `ptr`.
fn write(caller: &mut Ctx<'_>, ptr: u32, bytes: &[u8]) -> Result<(), Status> {
    let memory = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let start = ptr as usize;
    let end = start
        .checked_add(bytes.len())
        .ok_or(Status::InvalidMemoryAccess)?;
    memory
        .data_mut(&mut *caller)
        .get_mut(start..end)
        .ok_or(Status::InvalidMemoryAccess)?
        .copy_from_slice(bytes);
    Ok(())
}

fn write_u32(caller: &mut Ctx<'_>, ptr: u32, value: u32) -> Result<(), Status> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Hands `bytes` to the guest: memory from its allocator, filled, and its
/// address and size written at `ret_ptr` and `ret_size`. The return
/// pointers are checked before the allocator runs. A trap in the allocator
/// is the guest's failure (`Err`).
fn give(caller: &mut Ctx<'_>, bytes: &[u8], ret_ptr: u32, ret_size: u32) -> Result<Status> {
    if let Err(status) = write_u32(caller, ret_ptr, 0).and(write_u32(caller, ret_size, 0)) {
        return Ok(status);
    }
    let Some(alloc) = caller.data().alloc.clone() else {
        return Ok(Status::InternalFailure);
    };
    let len = bytes.len() as u32;
    let ptr = alloc.call(&mut *caller, len)?;
    if ptr == 0 && len > 0 {
        return Ok(Status::InternalFailure);
    }
    let written = write(caller, ptr, bytes)
        .and(write_u32(caller, ret_ptr, ptr))
        .and(write_u32(caller, ret_size, len));
    Ok(written.err().unwrap_or(Status::Ok))
}

fn status(result: Result<Status, Status>) -> u32 {
    match result {
        Ok(s) | Err(s) => s.into(),
    }
}

/// The header map `kind` names, if the current callback may see it.
fn header_map(ctx: &mut VmCtx, kind: u32) -> Option<&mut Headers> {
    if kind == map::HTTP_CALL_RESPONSE_HEADERS || kind == map::HTTP_CALL_RESPONSE_TRAILERS {
        let response = ctx.call_response.as_mut()?;
        return Some(if kind == map::HTTP_CALL_RESPONSE_HEADERS {
            &mut response.headers
        } else {
            &mut response.trailers
        });
    }
    if !ctx.in_stream {
        return None;
    }
    let stream = &mut ctx.stream;
    match kind {
        map::HTTP_REQUEST_HEADERS => Some(&mut stream.request_headers),
        map::HTTP_REQUEST_TRAILERS => Some(&mut stream.request_trailers),
        map::HTTP_RESPONSE_HEADERS if stream.response_started => Some(&mut stream.response_headers),
        map::HTTP_RESPONSE_TRAILERS if stream.response_started => {
            Some(&mut stream.response_trailers)
        }
        _ => None,
    }
}

/// Changes the header map `kind` with `change`, which adds at most `added`
/// bytes to its size (as `headers_size` counts), keeping it under its
/// bound; changed in place, never copied.
fn change_map(
    caller: &mut Ctx<'_>,
    kind: u32,
    added: usize,
    change: impl FnOnce(&mut Headers),
) -> Status {
    let Some(headers) = header_map(caller.data_mut(), kind) else {
        return Status::NotFound;
    };
    if added > 0 && headers_size(headers) + added > MAX_HEADERS_SIZE {
        return Status::BadArgument;
    }
    change(headers);
    let stream = &mut caller.data_mut().stream;
    match kind {
        map::HTTP_REQUEST_HEADERS => stream.request_headers_changed = true,
        map::HTTP_RESPONSE_HEADERS => stream.response_headers_changed = true,
        _ => {}
    }
    Status::Ok
}

fn log(caller: &Ctx<'_>, level: LogLevel, message: &str) {
    let ctx = caller.data();
    let config = &ctx.shared.config;
    if level >= config.log_level {
        config.log.log(&config.name, level, ctx.request, message);
    }
}

/// A property's value, as Envoy encodes it (text as is, integers as 8
/// little-endian bytes).
fn property(ctx: &VmCtx, path: &str) -> Option<Vec<u8>> {
    let config = &ctx.shared.config;
    match path {
        "plugin_name" | "plugin_root_id" | "plugin_vm_id" => {
            return Some(config.name.clone().into_bytes());
        }
        _ => {}
    }
    if !ctx.in_stream {
        return None;
    }
    let stream = &ctx.stream;
    if let Some(value) = stream.properties.get(path) {
        return Some(value.clone());
    }
    let header = |headers: &Headers, name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone().into_bytes())
    };
    let info = stream.info.as_ref()?;
    let int = |n: i64| Some(n.to_le_bytes().to_vec());
    match path {
        "request.path" => header(&stream.request_headers, ":path"),
        "request.url_path" => header(&stream.request_headers, ":path").map(|path| {
            let end = path.iter().position(|&b| b == b'?').unwrap_or(path.len());
            path[..end].to_vec()
        }),
        "request.host" => header(&stream.request_headers, ":authority"),
        "request.method" => header(&stream.request_headers, ":method"),
        "request.scheme" => header(&stream.request_headers, ":scheme"),
        "request.protocol" => Some(info.protocol.as_bytes().to_vec()),
        "request.id" => Some(info.request_id.clone().into_bytes()),
        "response.code" => {
            let code = header(&stream.response_headers, ":status")?;
            int(std::str::from_utf8(&code).ok()?.parse().ok()?)
        }
        "source.address" => Some(info.source.to_string().into_bytes()),
        "source.port" => int(info.source.port().into()),
        "destination.address" => Some(info.destination.to_string().into_bytes()),
        "destination.port" => int(info.destination.port().into()),
        _ => None,
    }
}

/// Adds every host function of the ABI to `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<VmCtx>) -> Result<()> {
    const ENV: &str = "env";
    linker.func_wrap(
        ENV,
        "proxy_log",
        |mut caller: Ctx<'_>, level: u32, ptr: u32, len: u32| {
            // Below the filter's level: nothing to read (SDKs format every
            // line they log at their own level, often `trace`).
            if LogLevel::from_guest(level) < caller.data().shared.config.log_level {
                return Status::Ok.into();
            }
            let message = match read(&mut caller, ptr, len) {
                Ok(message) => message,
                Err(status) => return u32::from(status),
            };
            let cut = &message[..message.len().min(MAX_LOG_LINE)];
            log(
                &caller,
                LogLevel::from_guest(level),
                &String::from_utf8_lossy(cut),
            );
            Status::Ok.into()
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_log_level",
        |mut caller: Ctx<'_>, ret: u32| {
            let level = caller.data().shared.config.log_level as u32;
            status(write_u32(&mut caller, ret, level).map(|()| Status::Ok))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_current_time_nanoseconds",
        |mut caller: Ctx<'_>, ret: u32| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            status(write(&mut caller, ret, &now.to_le_bytes()).map(|()| Status::Ok))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_tick_period_milliseconds",
        |mut caller: Ctx<'_>, period: u32| {
            caller.data_mut().tick_period =
                (period > 0).then(|| Duration::from_millis(period.into()));
            u32::from(Status::Ok)
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_buffer_bytes",
        |mut caller: Ctx<'_>, kind: u32, start: u32, max: u32, ret_ptr: u32, ret_size: u32| {
            let ctx = caller.data();
            let config = &ctx.shared.config;
            let whole: Option<&[u8]> = match kind {
                buffer::HTTP_REQUEST_BODY if ctx.in_stream => Some(&ctx.stream.request_body),
                buffer::HTTP_RESPONSE_BODY if ctx.in_stream => Some(&ctx.stream.response_body),
                buffer::HTTP_CALL_RESPONSE_BODY => ctx.call_response.as_ref().map(|r| &r.body[..]),
                buffer::VM_CONFIGURATION => Some(&config.vm_configuration),
                buffer::PLUGIN_CONFIGURATION => Some(&config.configuration),
                _ => None,
            };
            let Some(whole) = whole else {
                return Ok(u32::from(Status::NotFound));
            };
            let start = (start as usize).min(whole.len());
            let end = start.saturating_add(max as usize).min(whole.len());
            let bytes = whole[start..end].to_vec();
            give(&mut caller, &bytes, ret_ptr, ret_size).map(u32::from)
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_buffer_bytes",
        |mut caller: Ctx<'_>, kind: u32, start: u32, size: u32, ptr: u32, len: u32| {
            let bytes = match read(&mut caller, ptr, len) {
                Ok(bytes) => bytes,
                Err(status) => return u32::from(status),
            };
            let ctx = caller.data_mut();
            let stream = &mut ctx.stream;
            let body = match kind {
                buffer::HTTP_REQUEST_BODY if ctx.in_stream => &mut stream.request_body,
                buffer::HTTP_RESPONSE_BODY if ctx.in_stream => &mut stream.response_body,
                _ => return Status::NotFound.into(),
            };
            let start = (start as usize).min(body.len());
            let end = start.saturating_add(size as usize).min(body.len());
            if body.len() - (end - start) + bytes.len() > MAX_BODY {
                return Status::BadArgument.into();
            }
            body.splice(start..end, bytes);
            Status::Ok.into()
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_header_map_pairs",
        |mut caller: Ctx<'_>, kind: u32, ret_ptr: u32, ret_size: u32| {
            let encoded = header_map(caller.data_mut(), kind)
                .map(|headers| abi::encode_map(headers))
                .unwrap_or_else(|| abi::encode_map(&[]));
            give(&mut caller, &encoded, ret_ptr, ret_size).map(u32::from)
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_header_map_pairs",
        |mut caller: Ctx<'_>, kind: u32, ptr: u32, len: u32| {
            let bytes = match read(&mut caller, ptr, len) {
                Ok(bytes) => bytes,
                Err(status) => return u32::from(status),
            };
            let Some(pairs) = abi::decode_map(&bytes) else {
                return Status::BadArgument.into();
            };
            let pairs: Headers = pairs
                .into_iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v))
                .collect();
            if headers_size(&pairs) > MAX_HEADERS_SIZE {
                return Status::BadArgument.into();
            }
            change_map(&mut caller, kind, 0, |headers| *headers = pairs).into()
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_header_map_value",
        |mut caller: Ctx<'_>, kind: u32, kptr: u32, klen: u32, ret_ptr: u32, ret_size: u32| {
            let name = match read_str(&mut caller, kptr, klen) {
                Ok(name) => name.to_ascii_lowercase(),
                Err(status) => return Ok(u32::from(status)),
            };
            let Some(headers) = header_map(caller.data_mut(), kind) else {
                return Ok(Status::NotFound.into());
            };
            let values: Vec<&str> = headers
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            if values.is_empty() {
                return Ok(Status::NotFound.into());
            }
            let value = values.join(",");
            give(&mut caller, value.as_bytes(), ret_ptr, ret_size).map(u32::from)
        },
    )?;
    fn name_value(
        caller: &mut Ctx<'_>,
        (kptr, klen, vptr, vlen): (u32, u32, u32, u32),
    ) -> Result<(String, String), Status> {
        let name = read_str(caller, kptr, klen)?.to_ascii_lowercase();
        let value = read_str(caller, vptr, vlen)?;
        Ok((name, value))
    }
    linker.func_wrap(
        ENV,
        "proxy_replace_header_map_value",
        |mut caller: Ctx<'_>, kind: u32, kptr: u32, klen: u32, vptr: u32, vlen: u32| {
            let (name, value) = match name_value(&mut caller, (kptr, klen, vptr, vlen)) {
                Ok(pair) => pair,
                Err(status) => return u32::from(status),
            };
            let added = field_size(&name, &value);
            change_map(&mut caller, kind, added, |headers| {
                headers.retain(|(n, _)| *n != name);
                headers.push((name, value));
            })
            .into()
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_add_header_map_value",
        |mut caller: Ctx<'_>, kind: u32, kptr: u32, klen: u32, vptr: u32, vlen: u32| {
            let (name, value) = match name_value(&mut caller, (kptr, klen, vptr, vlen)) {
                Ok(pair) => pair,
                Err(status) => return u32::from(status),
            };
            let added = field_size(&name, &value);
            change_map(&mut caller, kind, added, |headers| {
                headers.push((name, value))
            })
            .into()
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_remove_header_map_value",
        |mut caller: Ctx<'_>, kind: u32, kptr: u32, klen: u32| {
            let name = match read_str(&mut caller, kptr, klen) {
                Ok(name) => name.to_ascii_lowercase(),
                Err(status) => return u32::from(status),
            };
            change_map(&mut caller, kind, 0, |headers| {
                headers.retain(|(n, _)| *n != name)
            })
            .into()
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_property",
        |mut caller: Ctx<'_>, ptr: u32, len: u32, ret_ptr: u32, ret_size: u32| {
            let path = match read(&mut caller, ptr, len) {
                Ok(path) => path,
                Err(status) => return Ok(u32::from(status)),
            };
            let Some(path) = abi::property_path(&path) else {
                return Ok(Status::BadArgument.into());
            };
            match property(caller.data(), &path) {
                Some(value) => give(&mut caller, &value, ret_ptr, ret_size).map(u32::from),
                None => Ok(Status::NotFound.into()),
            }
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_property",
        |mut caller: Ctx<'_>, ptr: u32, len: u32, vptr: u32, vlen: u32| {
            let (path, value) = match (read(&mut caller, ptr, len), read(&mut caller, vptr, vlen)) {
                (Ok(path), Ok(value)) => (path, value),
                (Err(status), _) | (_, Err(status)) => return u32::from(status),
            };
            let Some(path) = abi::property_path(&path) else {
                return Status::BadArgument.into();
            };
            let ctx = caller.data_mut();
            if !ctx.in_stream {
                return Status::NotFound.into();
            }
            let stream = &mut ctx.stream;
            let size = stream.properties_size + path.len() + value.len();
            if size > MAX_PROPERTIES_SIZE {
                return Status::BadArgument.into();
            }
            stream.properties_size = size;
            stream.properties.insert(path, value);
            Status::Ok.into()
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_shared_data",
        |mut caller: Ctx<'_>, kptr: u32, klen: u32, ret_ptr: u32, ret_size: u32, ret_cas: u32| {
            let key = match read_str(&mut caller, kptr, klen) {
                Ok(key) => key,
                Err(status) => return Ok(u32::from(status)),
            };
            let Some((value, cas)) = caller.data().shared.space.get_data(&key) else {
                return Ok(Status::NotFound.into());
            };
            if let Err(status) = write_u32(&mut caller, ret_cas, cas) {
                return Ok(status.into());
            }
            give(&mut caller, &value, ret_ptr, ret_size).map(u32::from)
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_shared_data",
        |mut caller: Ctx<'_>, kptr: u32, klen: u32, vptr: u32, vlen: u32, cas: u32| {
            let (key, value) = match (
                read_str(&mut caller, kptr, klen),
                read(&mut caller, vptr, vlen),
            ) {
                (Ok(key), Ok(value)) => (key, value),
                (Err(status), _) | (_, Err(status)) => return u32::from(status),
            };
            match caller.data().shared.space.set_data(&key, &value, cas) {
                Ok(()) => Status::Ok.into(),
                Err(true) => Status::CasMismatch.into(),
                Err(false) => {
                    log(
                        &caller,
                        LogLevel::Warn,
                        "shared data is full (16 MiB); value not stored",
                    );
                    Status::InternalFailure.into()
                }
            }
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_register_shared_queue",
        |mut caller: Ctx<'_>, ptr: u32, len: u32, ret_id: u32| {
            let name = match read_str(&mut caller, ptr, len) {
                Ok(name) => name,
                Err(status) => return u32::from(status),
            };
            // A VM started outside a runtime (the trial VM of a new
            // version) registers the queue without being told of items.
            let owner = tokio::runtime::Handle::try_current()
                .ok()
                .map(|runtime| QueueOwner {
                    vm: caller.data().this.clone(),
                    root: ROOT_CONTEXT,
                    runtime,
                });
            match caller.data().shared.space.register_queue(&name, owner) {
                Some(id) => status(write_u32(&mut caller, ret_id, id).map(|()| Status::Ok)),
                None => Status::InternalFailure.into(),
            }
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_resolve_shared_queue",
        |mut caller: Ctx<'_>, vptr: u32, vlen: u32, ptr: u32, len: u32, ret_id: u32| {
            let (vm_id, name) = match (
                read_str(&mut caller, vptr, vlen),
                read_str(&mut caller, ptr, len),
            ) {
                (Ok(vm_id), Ok(name)) => (vm_id, name),
                (Err(status), _) | (_, Err(status)) => return u32::from(status),
            };
            // Only this filter's own queues: filters never reach each other.
            if !vm_id.is_empty() && vm_id != caller.data().shared.config.name {
                return Status::NotFound.into();
            }
            match caller.data().shared.space.resolve_queue(&name) {
                Some(id) => status(write_u32(&mut caller, ret_id, id).map(|()| Status::Ok)),
                None => Status::NotFound.into(),
            }
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_dequeue_shared_queue",
        |mut caller: Ctx<'_>, id: u32, ret_ptr: u32, ret_size: u32| match caller
            .data()
            .shared
            .space
            .dequeue(id)
        {
            QueueResult::Ok(item) => give(&mut caller, &item, ret_ptr, ret_size).map(u32::from),
            QueueResult::Empty => Ok(Status::Empty.into()),
            QueueResult::NotFound | QueueResult::Full => Ok(Status::NotFound.into()),
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_enqueue_shared_queue",
        |mut caller: Ctx<'_>, id: u32, ptr: u32, len: u32| {
            let item = match read(&mut caller, ptr, len) {
                Ok(item) => item,
                Err(status) => return u32::from(status),
            };
            match caller.data().shared.space.enqueue(id, item) {
                QueueResult::Ok(()) => Status::Ok.into(),
                QueueResult::Full => {
                    log(
                        &caller,
                        LogLevel::Warn,
                        "shared queue is full; item dropped",
                    );
                    Status::Ok.into()
                }
                QueueResult::NotFound | QueueResult::Empty => Status::NotFound.into(),
            }
        },
    )?;
    fn resume(caller: &mut Ctx<'_>, kind: u32) -> u32 {
        let ctx = caller.data_mut();
        if !ctx.in_stream {
            return Status::NotFound.into();
        }
        match kind {
            stream::HTTP_REQUEST => ctx.stream.resume_request = true,
            stream::HTTP_RESPONSE => ctx.stream.resume_response = true,
            _ => return Status::BadArgument.into(),
        }
        Status::Ok.into()
    }
    linker.func_wrap(
        ENV,
        "proxy_continue_stream",
        |mut caller: Ctx<'_>, kind: u32| resume(&mut caller, kind),
    )?;
    linker.func_wrap(ENV, "proxy_continue_request", |mut caller: Ctx<'_>| {
        resume(&mut caller, stream::HTTP_REQUEST)
    })?;
    linker.func_wrap(ENV, "proxy_continue_response", |mut caller: Ctx<'_>| {
        resume(&mut caller, stream::HTTP_RESPONSE)
    })?;
    linker.func_wrap(
        ENV,
        "proxy_close_stream",
        |mut caller: Ctx<'_>, _kind: u32| {
            let ctx = caller.data_mut();
            if !ctx.in_stream {
                return u32::from(Status::NotFound);
            }
            ctx.stream.close = true;
            Status::Ok.into()
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_send_local_response",
        |mut caller: Ctx<'_>,
         code: u32,
         dptr: u32,
         dlen: u32,
         bptr: u32,
         blen: u32,
         hptr: u32,
         hlen: u32,
         _grpc: i32| {
            let read_all = |caller: &mut Ctx<'_>| -> Result<(Vec<u8>, Vec<u8>), Status> {
                read(caller, dptr, dlen)?;
                Ok((read(caller, bptr, blen)?, read(caller, hptr, hlen)?))
            };
            let (body, headers) = match read_all(&mut caller) {
                Ok(parts) => parts,
                Err(status) => return u32::from(status),
            };
            let Some(headers) = abi::decode_map(&headers) else {
                return Status::BadArgument.into();
            };
            if !(200..=599).contains(&code)
                || body.len() > MAX_BODY
                || headers_size(&headers) > MAX_HEADERS_SIZE
            {
                return Status::BadArgument.into();
            }
            let ctx = caller.data_mut();
            if !ctx.in_stream {
                return Status::NotFound.into();
            }
            ctx.stream.local_response = Some(LocalResponse {
                status: code as u16,
                headers: headers
                    .into_iter()
                    .map(|(n, v)| (n.to_ascii_lowercase(), v))
                    .collect(),
                body: body.into(),
            });
            Status::Ok.into()
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_http_call",
        |mut caller: Ctx<'_>,
         uptr: u32,
         ulen: u32,
         hptr: u32,
         hlen: u32,
         bptr: u32,
         blen: u32,
         tptr: u32,
         tlen: u32,
         timeout: u32,
         ret_token: u32| {
            let read_all = |caller: &mut Ctx<'_>| -> Result<_, Status> {
                let upstream = read_str(caller, uptr, ulen)?;
                let headers = read(caller, hptr, hlen)?;
                let body = read(caller, bptr, blen)?;
                let trailers = read(caller, tptr, tlen)?;
                write_u32(caller, ret_token, 0)?;
                Ok((upstream, headers, body, trailers))
            };
            let (upstream, headers, body, trailers) = match read_all(&mut caller) {
                Ok(parts) => parts,
                Err(status) => return u32::from(status),
            };
            if !caller.data().shared.config.upstreams.contains(&upstream) {
                let message =
                    format!("dispatch_http_call to `{upstream}` refused: not a declared upstream");
                log(&caller, LogLevel::Warn, &message);
                return Status::BadArgument.into();
            }
            let (Some(headers), Some(trailers)) =
                (abi::decode_map(&headers), abi::decode_map(&trailers))
            else {
                return Status::BadArgument.into();
            };
            if headers_size(&headers) > MAX_HEADERS_SIZE
                || headers_size(&trailers) > MAX_HEADERS_SIZE
            {
                return Status::BadArgument.into();
            }
            let ctx = caller.data_mut();
            if !ctx.in_stream {
                let refused = if ctx.context != ROOT_CONTEXT {
                    Some("dispatch_http_call while a stream context is created is not supported")
                } else if ctx.shared.config.dispatcher.is_none() {
                    Some("dispatch_http_call outside a request is not supported here")
                } else {
                    None
                };
                if let Some(why) = refused {
                    log(&caller, LogLevel::Warn, why);
                    return Status::InternalFailure.into();
                }
            }
            // A stream's calls are made by the stream's host task; the root
            // context's (a tick, a queue callback) by the dispatcher.
            let (in_flight, calls) = if ctx.in_stream {
                (&mut ctx.stream.calls_in_flight, &mut ctx.stream.calls)
            } else {
                (&mut ctx.root_calls_in_flight, &mut ctx.root_calls)
            };
            if *in_flight >= MAX_CALLS_PER_STREAM {
                return Status::InternalFailure.into();
            }
            *in_flight += 1;
            let token = ctx.next_token;
            ctx.next_token = ctx.next_token.wrapping_add(1).max(1);
            calls.push(HttpCall {
                token,
                upstream,
                headers,
                body: body.into(),
                trailers,
                timeout: Duration::from_millis(timeout.into()),
            });
            status(write_u32(&mut caller, ret_token, token).map(|()| Status::Ok))
        },
    )?;
    fn grpc_unimplemented(caller: &mut Ctx<'_>) -> u32 {
        if !caller.data().grpc_noted {
            caller.data_mut().grpc_noted = true;
            log(
                caller,
                LogLevel::Warn,
                "gRPC calls are unimplemented in Tern",
            );
        }
        Status::InternalFailure.into()
    }
    linker.func_wrap(
        ENV,
        "proxy_grpc_call",
        |mut caller: Ctx<'_>,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32| grpc_unimplemented(&mut caller),
    )?;
    linker.func_wrap(
        ENV,
        "proxy_grpc_stream",
        |mut caller: Ctx<'_>,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32,
         _: u32| grpc_unimplemented(&mut caller),
    )?;
    linker.func_wrap(
        ENV,
        "proxy_grpc_send",
        |_: Ctx<'_>, _: u32, _: u32, _: u32, _: u32| u32::from(Status::NotFound),
    )?;
    linker.func_wrap(ENV, "proxy_grpc_cancel", |_: Ctx<'_>, _: u32| {
        u32::from(Status::NotFound)
    })?;
    linker.func_wrap(ENV, "proxy_grpc_close", |_: Ctx<'_>, _: u32| {
        u32::from(Status::NotFound)
    })?;
    linker.func_wrap(
        ENV,
        "proxy_get_status",
        |mut caller: Ctx<'_>, ret_code: u32, ret_ptr: u32, ret_size: u32| {
            let written = write_u32(&mut caller, ret_code, 0)
                .and(write_u32(&mut caller, ret_ptr, 0))
                .and(write_u32(&mut caller, ret_size, 0));
            status(written.map(|()| Status::Ok))
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_set_effective_context",
        |caller: Ctx<'_>, id: u32| {
            // Each callback already acts on its own context (SDKs set it all
            // the same); switching to another stream's is not offered.
            u32::from(if id == ROOT_CONTEXT || id == caller.data().context {
                Status::Ok
            } else {
                Status::BadArgument
            })
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_call_foreign_function",
        |_: Ctx<'_>, _: u32, _: u32, _: u32, _: u32, _: u32, _: u32| u32::from(Status::NotFound),
    )?;
    linker.func_wrap(ENV, "proxy_done", |_: Ctx<'_>| u32::from(Status::Ok))?;
    linker.func_wrap(
        ENV,
        "proxy_define_metric",
        |mut caller: Ctx<'_>, kind: u32, ptr: u32, len: u32, ret_id: u32| {
            let kind = match kind {
                0 => MetricKind::Counter,
                1 => MetricKind::Gauge,
                2 => MetricKind::Histogram,
                _ => return u32::from(Status::BadArgument),
            };
            let name = match read_str(&mut caller, ptr, len) {
                Ok(name) => name,
                Err(status) => return status.into(),
            };
            match caller.data().shared.space.define_metric(kind, &name) {
                Some(id) => status(write_u32(&mut caller, ret_id, id).map(|()| Status::Ok)),
                None => Status::BadArgument.into(),
            }
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_increment_metric",
        |caller: Ctx<'_>, id: u32, offset: i64| {
            u32::from(
                match caller.data().shared.space.increment_metric(id, offset) {
                    Some(true) => Status::Ok,
                    Some(false) => Status::BadArgument,
                    None => Status::NotFound,
                },
            )
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_record_metric",
        |caller: Ctx<'_>, id: u32, value: u64| {
            u32::from(match caller.data().shared.space.record_metric(id, value) {
                Some(()) => Status::Ok,
                None => Status::NotFound,
            })
        },
    )?;
    linker.func_wrap(
        ENV,
        "proxy_get_metric",
        |mut caller: Ctx<'_>, id: u32, ret: u32| {
            let Some(value) = caller.data().shared.space.get_metric(id) else {
                return u32::from(Status::NotFound);
            };
            status(write(&mut caller, ret, &value.to_le_bytes()).map(|()| Status::Ok))
        },
    )?;
    Ok(())
}
