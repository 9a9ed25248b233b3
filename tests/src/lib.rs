//! End-to-end tests for deltaward live in `tests/`: real image pairs (built by
//! `scripts/make-pairs.sh`, located by `deltaward-testkit`), images over 4 GiB, and,
//! with the mirror, real servers on 127.0.0.1. This library is empty.
#![forbid(unsafe_code)]
