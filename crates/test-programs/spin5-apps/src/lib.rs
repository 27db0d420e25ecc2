//! Nothing here: every app is an example.
