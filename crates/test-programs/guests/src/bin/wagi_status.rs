//! A WAGI program that picks its own status and headers through the CGI
//! `Status` header.
fn main() {
    print!(
        "Status: 201 Created\nLocation: /items/7\nX-Custom: yes\nContent-Type: text/plain\n\ncreated\n"
    );
}
