//! Variables as Spin's documentation shows them: `GET /NAME` answers the
//! value of the component variable NAME.

use spin_sdk::http::{IntoResponse, Request, Response};
use spin_sdk::{http_service, variables};

#[http_service]
async fn handle(req: Request) -> impl IntoResponse {
    let name = req.uri().path().trim_start_matches('/');
    match variables::get(name).await {
        Ok(value) => Response::builder().status(200).body(value).unwrap(),
        Err(e) => Response::builder().status(404).body(format!("{e}")).unwrap(),
    }
}
