//! Variables as Spin's documentation for SDK 5 shows them: `GET /NAME`
//! answers the value of the component variable NAME.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::{http_component, variables};

#[http_component]
fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let name = req.path().trim_start_matches('/');
    Ok(match variables::get(name) {
        Ok(value) => Response::new(200, value),
        Err(e) => Response::new(404, format!("{e}")),
    })
}
