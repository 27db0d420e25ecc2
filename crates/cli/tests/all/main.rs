//! Integration tests: drive the built `tern` binary with the guest programs
//! from `test-programs` and assert what a user sees.

mod build;
mod cache;
mod call;
mod errors;
mod examples;
mod grants;
mod host;
mod invoke;
mod isolation;
mod limits;
mod nn;
mod outbound;
mod proxy;
mod reload;
mod run;
mod serve;
mod serve_errors;
mod serve_limits;
mod services;
mod serving;
mod spin;
mod support;
mod templates;
mod tls;
mod wasi_p3;

// Every guest program has a test named after it.
use errors::*;
use grants::*;
use invoke::*;
use isolation::*;
use limits::*;
use nn::*;
use outbound::*;
use proxy::proxy_memories;
use run::*;
use serve::*;
use serve_limits::*;
use services::*;
use spin::*;
use wasi_p3::*;

macro_rules! assert_test_exists {
    ($name:ident) => {
        #[allow(unused_imports)]
        use self::$name as _;
    };
}
test_programs::foreach_guest!(assert_test_exists);
test_programs::foreach_http_guest!(assert_test_exists);
test_programs::foreach_wagi_guest!(assert_test_exists);
test_programs::foreach_p3_guest!(assert_test_exists);
test_programs::foreach_http3_guest!(assert_test_exists);
test_programs::foreach_spin_app!(assert_test_exists);
test_programs::foreach_spin5_app!(assert_test_exists);
test_programs::foreach_nn_guest!(assert_test_exists);
