//! Outgoing requests with a relative URL (`/api/items`): requests to the
//! app itself, as Spin's SDKs send them.
//!
//! wasmtime-wasi-http builds a request's URI from its scheme, authority
//! and path before the host's hook sees it, and a request without an
//! authority has no URI to build: the guest would get
//! `HttpRequestUriInvalid` whatever the allowlist says. So Tern links
//! `wasi:http/outgoing-handler` (0.2) and `wasi:http/client` (0.3) itself:
//! each gives a request without an authority the host `self.alt` (the
//! name Spin gives the app itself), then hands it to wasmtime-wasi-http's
//! own implementation. The hook ([`crate::outbound`]) then sends it to the
//! app if `http://self` is allowed, and refuses it otherwise.

use wasmtime::component::{Accessor, HasData, Linker, Resource};
use wasmtime::{Result, StoreContextMut};
use wasmtime_wasi::TrappableError;
use wasmtime_wasi_http::p2::bindings::http::{outgoing_handler, types as p2_types};
use wasmtime_wasi_http::p2::types::HostOutgoingRequest;
use wasmtime_wasi_http::p3::bindings::http::{client, types as p3_types};
use wasmtime_wasi_http::{WasiHttp, WasiHttpCtxView, WasiHttpView};

/// The authority a relative URL gets: the app itself.
pub(crate) const SELF_AUTHORITY: &str = "self.alt";

/// The `outgoing-handler` that [`add_p2_to_linker`] replaces, at the
/// version wasmtime-wasi-http defines it (a guest's 0.2.x import matches it).
const P2_OUTGOING_HANDLER: &str = "wasi:http/outgoing-handler@0.2.12";

/// Links wasi-http 0.2 (`types` and `outgoing-handler`), the handler
/// giving relative URLs the app itself as their authority.
pub(crate) fn add_p2_to_linker<T: WasiHttpView + 'static>(linker: &mut Linker<T>) -> Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    // The generated `outgoing-handler` bindings need a view implementing
    // all of `wasi:http/types` as well; redefining its one function is
    // smaller.
    linker.allow_shadowing(true);
    let defined = linker.instance(P2_OUTGOING_HANDLER)?.func_wrap(
        "handle",
        |mut store: StoreContextMut<'_, T>,
         (request, options): (
            Resource<HostOutgoingRequest>,
            Option<Resource<p2_types::RequestOptions>>,
        )| {
            let mut view = store.data_mut().http();
            if let Ok(outgoing) = view.table.get_mut(&request)
                && outgoing.authority.is_none()
            {
                outgoing.authority = Some(SELF_AUTHORITY.to_owned());
            }
            match outgoing_handler::Host::handle(&mut view, request, options) {
                Ok(future) => Ok((Ok(future),)),
                Err(error) => Ok((Err(error.downcast()?),)),
            }
        },
    );
    linker.allow_shadowing(false);
    defined
}

/// Links wasi-http 0.3 (`types` and `client`), the client giving relative
/// URLs the app itself as their authority.
pub(crate) fn add_p3_to_linker<T: WasiHttpView + 'static>(linker: &mut Linker<T>) -> Result<()> {
    p3_types::add_to_linker::<_, WasiHttp>(linker, T::http)?;
    client::add_to_linker::<_, RelativeP3>(linker, T::http)
}

/// wasi-http 0.3's `client`, over the same view as wasmtime-wasi-http's.
struct RelativeP3;

impl HasData for RelativeP3 {
    type Data<'a> = WasiHttpCtxView<'a>;
}

impl<T> client::HostWithStore<T> for RelativeP3 {
    async fn send(
        store: &Accessor<T, Self>,
        request: Resource<wasmtime_wasi_http::p3::Request>,
    ) -> Result<Resource<wasmtime_wasi_http::p3::Response>, TrappableError<p3_types::ErrorCode>>
    {
        store.with(|mut access| {
            if let Ok(outgoing) = access.get().table.get_mut(&request)
                && outgoing.authority.is_none()
            {
                outgoing.authority = Some(http::uri::Authority::from_static(SELF_AUTHORITY));
            }
        });
        let inner = store.with_getter::<WasiHttp>(store.getter());
        <WasiHttp as client::HostWithStore<T>>::send(&inner, request).await
    }
}
