//! Nothing here: every filter is an example.
