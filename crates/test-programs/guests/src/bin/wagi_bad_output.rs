//! A WAGI program that exits 0 without a CGI header block: the host must
//! refuse its output rather than pass it on.
fn main() {
    println!("this is not a CGI response");
}
