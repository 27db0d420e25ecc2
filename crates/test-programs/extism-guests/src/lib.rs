//! Nothing here: every plug-in is an example.
