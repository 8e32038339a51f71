//! Durable state: a small Store trait with an embedded (redb) implementation.
