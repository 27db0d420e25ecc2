//! A stream through a chain of filters: each callback in chain order, what
//! stops the chain (a local response, a pause, a failure), and resuming it.

use std::sync::{Arc, Mutex, PoisonError};

use crate::config::{FailurePolicy, LogLevel};
use crate::filter::Filter;
use crate::stream::{CallResponse, Headers, HttpCall, LocalResponse, StreamData, StreamInfo};
use crate::vm::{FilterVm, Phase};

/// The most body one filter may hold back (returning `Pause`) before the
/// stream fails.
const MAX_HELD_BODY: usize = 16 << 20;

/// What the host does next with a stream.
#[derive(Debug)]
pub enum Step {
    /// Go on: forward what the chain let through.
    Continue,
    /// Answer with this response instead.
    Respond(LocalResponse),
    /// A filter paused the stream: make the calls in [`Chain::take_calls`],
    /// deliver their answers, and wait for it to resume.
    Wait,
    /// A filter failed and its policy is `closed`: refuse the request (500),
    /// or cut off a response already begun. The text says which and why.
    Fail(String),
}

/// One filter's part in a stream.
struct Slot {
    filter: Arc<Filter>,
    /// `None` once the filter failed with policy `open`: skipped from then on.
    vm: Option<Arc<Mutex<FilterVm>>>,
    context: u32,
    /// The bodies held back by this filter (it returned `Pause`).
    held: Held,
}

/// What one filter holds of the request body (`[0]`) and of the response
/// body (`[1]`): the bytes as the filter left them, and, when it fails
/// open, the bytes as it was given them, for what goes on if it fails.
#[derive(Default)]
struct Held {
    body: [Vec<u8>; 2],
    given: [Vec<u8>; 2],
}

/// The filters one stream passes through, in order.
pub struct Chain {
    slots: Vec<Slot>,
    data: StreamData,
    request: u64,
    /// Where a paused header phase resumes.
    paused: Option<(bool, usize)>,
    calls: Vec<(usize, HttpCall)>,
    finished: bool,
}

impl Chain {
    /// Starts a stream through `filters`: a context in each filter's VM.
    pub fn new(
        filters: &[Arc<Filter>],
        info: StreamInfo,
        request_headers: Headers,
    ) -> Result<Chain, String> {
        let request = info.request_seq;
        let mut slots = Vec::with_capacity(filters.len());
        for filter in filters {
            let started = filter.vm().and_then(|vm| {
                let context = vm
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .create_stream()?;
                Ok((vm, context))
            });
            match started {
                Ok((vm, context)) => slots.push(Slot {
                    filter: filter.clone(),
                    vm: Some(vm),
                    context,
                    held: Held::default(),
                }),
                Err(why) => match failed(filter, request, &why) {
                    Some(fail) => return Err(fail),
                    None => slots.push(Slot {
                        filter: filter.clone(),
                        vm: None,
                        context: 0,
                        held: Held::default(),
                    }),
                },
            }
        }
        let data = StreamData {
            info: Some(info),
            request_headers,
            ..StreamData::default()
        };
        Ok(Chain {
            slots,
            data,
            request,
            paused: None,
            calls: Vec::new(),
            finished: false,
        })
    }

    /// Whether there are filters at all.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The request headers as the filters left them.
    pub fn request_headers(&self) -> &Headers {
        &self.data.request_headers
    }

    /// The response headers as the filters left them.
    pub fn response_headers(&self) -> &Headers {
        &self.data.response_headers
    }

    /// Whether a filter changed the request headers.
    pub fn request_headers_changed(&self) -> bool {
        self.data.request_headers_changed
    }

    /// Whether a filter changed the response headers.
    pub fn response_headers_changed(&self) -> bool {
        self.data.response_headers_changed
    }

    /// The calls filters dispatched, each with the index of its filter.
    pub fn take_calls(&mut self) -> Vec<(usize, HttpCall)> {
        std::mem::take(&mut self.calls)
    }

    /// Runs `proxy_on_request_headers` through the chain.
    pub fn request_headers_phase(&mut self, end: bool) -> Step {
        self.headers_from(false, 0, end)
    }

    /// Runs `proxy_on_response_headers` with the upstream's (or a local
    /// answer's) headers, `:status` first.
    pub fn response_headers_phase(&mut self, headers: Headers, end: bool) -> Step {
        self.data.response_headers = headers;
        self.data.response_started = true;
        self.headers_from(true, 0, end)
    }

    fn headers_from(&mut self, response: bool, from: usize, end: bool) -> Step {
        for index in from..self.slots.len() {
            let count = if response {
                self.data.response_headers.len()
            } else {
                self.data.request_headers.len()
            } as u32;
            let phase = if response {
                Phase::ResponseHeaders { count, end }
            } else {
                Phase::RequestHeaders { count, end }
            };
            match self.callback(index, |vm, context, request, data| {
                vm.stream_callback(context, request, data, phase)
            }) {
                Outcome::Go(true) => {}
                Outcome::Go(false) => {
                    if let Some(response) = self.data.local_response.take() {
                        return Step::Respond(response);
                    }
                    self.paused = Some((response, index));
                    return Step::Wait;
                }
                Outcome::Skip => {}
                Outcome::Stop(step) => return step,
            }
        }
        Step::Continue
    }

    /// Hands a call's answer (`None`: the call failed) to the filter that
    /// made it; resumes the chain if that filter asked to.
    pub fn deliver(&mut self, index: usize, token: u32, response: Option<CallResponse>) -> Step {
        self.data.calls_in_flight = self.data.calls_in_flight.saturating_sub(1);
        let outcome = self.callback(index, |vm, context, request, data| {
            vm.call_response(context, request, data, token, response.unwrap_or_default())
                .map(|()| true)
        });
        if let Outcome::Stop(step) = outcome {
            return step;
        }
        if let Some(response) = self.data.local_response.take() {
            return Step::Respond(response);
        }
        let Some((response, at)) = self.paused else {
            return Step::Continue;
        };
        let resumed = if response {
            std::mem::take(&mut self.data.resume_response)
        } else {
            std::mem::take(&mut self.data.resume_request)
        };
        if resumed || matches!(outcome, Outcome::Skip) {
            self.paused = None;
            return self.headers_from(response, at + 1, false);
        }
        Step::Wait
    }

    /// Whether calls are still out for this stream.
    pub fn calls_in_flight(&self) -> bool {
        self.data.calls_in_flight > 0
    }

    /// Passes a piece of the request (or response) body through the chain;
    /// `Ok` holds what goes on (possibly nothing yet: a filter is holding
    /// the body until more comes).
    pub fn body(&mut self, response: bool, chunk: &[u8], end: bool) -> Result<Vec<u8>, Step> {
        let mut passing = chunk.to_vec();
        let kind = usize::from(response);
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            let mut buffer = std::mem::take(&mut slot.held.body[kind]);
            buffer.extend_from_slice(&passing);
            // A failed filter's changes are not kept: what it was given goes
            // on, the bytes it held included. Kept only where it matters.
            let fails_open = slot.filter.config().failure == FailurePolicy::Open;
            if fails_open {
                slot.held.given[kind].extend_from_slice(&passing);
            }
            let size = buffer.len() as u32;
            let phase = if response {
                self.data.response_body = buffer;
                Phase::ResponseBody { size, end }
            } else {
                self.data.request_body = buffer;
                Phase::RequestBody { size, end }
            };
            let outcome = self.callback(index, |vm, context, request, data| {
                vm.stream_callback(context, request, data, phase)
            });
            let buffer = if response {
                std::mem::take(&mut self.data.response_body)
            } else {
                std::mem::take(&mut self.data.request_body)
            };
            if let Some(local) = self.data.local_response.take() {
                return Err(Step::Respond(local));
            }
            match outcome {
                Outcome::Go(false)
                    if !end
                        && buffer.len().max(self.slots[index].held.given[kind].len())
                            > MAX_HELD_BODY =>
                {
                    let name = &self.slots[index].filter.config().name;
                    return Err(Step::Fail(format!(
                        "filter `{name}` held back more than {} MiB of body",
                        MAX_HELD_BODY >> 20
                    )));
                }
                Outcome::Go(false) if !end => {
                    self.slots[index].held.body[kind] = buffer;
                    return Ok(Vec::new());
                }
                Outcome::Go(_) => {
                    self.slots[index].held.given[kind].clear();
                    passing = buffer;
                }
                Outcome::Skip if fails_open => {
                    passing = std::mem::take(&mut self.slots[index].held.given[kind]);
                }
                Outcome::Skip => passing = buffer,
                Outcome::Stop(step) => return Err(step),
            }
        }
        Ok(passing)
    }

    /// Passes trailers through the chain.
    pub fn trailers(&mut self, response: bool, trailers: Headers) -> Result<Headers, Step> {
        if response {
            self.data.response_trailers = trailers;
        } else {
            self.data.request_trailers = trailers;
        }
        for index in 0..self.slots.len() {
            let count = if response {
                self.data.response_trailers.len()
            } else {
                self.data.request_trailers.len()
            } as u32;
            let phase = if response {
                Phase::ResponseTrailers { count }
            } else {
                Phase::RequestTrailers { count }
            };
            if let Outcome::Stop(step) = self.callback(index, |vm, context, request, data| {
                vm.stream_callback(context, request, data, phase)
            }) {
                return Err(step);
            }
        }
        Ok(if response {
            std::mem::take(&mut self.data.response_trailers)
        } else {
            std::mem::take(&mut self.data.request_trailers)
        })
    }

    /// Ends the stream in every filter (`proxy_on_done`, `proxy_on_log`,
    /// `proxy_on_delete`); also done when the chain is dropped.
    pub fn finish(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        for slot in &self.slots {
            if let Some(vm) = &slot.vm {
                let mut locked = vm.lock().unwrap_or_else(PoisonError::into_inner);
                locked.finish_stream(slot.context, self.request, &mut self.data);
                // A tick period set in this stream's callbacks.
                crate::filter::follow_up(vm, &mut locked);
            }
        }
    }

    fn callback(
        &mut self,
        index: usize,
        call: impl FnOnce(&mut FilterVm, u32, u64, &mut StreamData) -> Result<bool, String>,
    ) -> Outcome {
        let slot = &mut self.slots[index];
        let Some(vm) = &slot.vm else {
            return Outcome::Skip;
        };
        let result = call(
            &mut vm.lock().unwrap_or_else(PoisonError::into_inner),
            slot.context,
            self.request,
            &mut self.data,
        );
        for call in self.data.calls.drain(..) {
            self.calls.push((index, call));
        }
        // `close_stream`: the stream is reset, whatever the filter returned.
        if result.is_ok() && std::mem::take(&mut self.data.close) {
            let name = &slot.filter.config().name;
            return Outcome::Stop(Step::Fail(format!("filter `{name}` closed the stream")));
        }
        match result {
            Ok(go) => Outcome::Go(go),
            Err(why) => {
                slot.vm = None;
                match failed(&slot.filter, self.request, &why) {
                    Some(fail) => Outcome::Stop(Step::Fail(fail)),
                    None => Outcome::Skip,
                }
            }
        }
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        self.finish();
    }
}

enum Outcome {
    /// The callback returned; `true` for `Continue`.
    Go(bool),
    /// The filter is out of this stream (failed open).
    Skip,
    Stop(Step),
}

/// A filter failed: the failure to report when its policy is closed, or
/// `None` (logged) when it is open.
fn failed(filter: &Filter, request: u64, why: &str) -> Option<String> {
    let config = filter.config();
    let text = format!("filter `{}` {why}", config.name);
    match config.failure {
        FailurePolicy::Closed => Some(text),
        FailurePolicy::Open => {
            let message = format!("{why}; the request goes on without it (failure = \"open\")");
            if LogLevel::Error >= config.log_level {
                config
                    .log
                    .log(&config.name, LogLevel::Error, request, &message);
            }
            None
        }
    }
}
