//! Unit tests of the domain (filled in below).
