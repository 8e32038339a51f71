//! Per-thread pools of read and write buffers (nginx's model): a connection takes a read
//! buffer only once its socket has bytes to give, and gives it back as soon as everything
//! read has been consumed, so an idle keep-alive connection holds no buffer at all. The
//! proxy runs one current-thread runtime per worker thread, so a thread-local free list is
//! the worker's pool, reached without a lock.

use std::cell::RefCell;

/// Size of a pooled buffer. A head that does not fit grows its buffer (up to the head
/// limit); a grown buffer is freed rather than pooled.
pub const BUFFER_SIZE: usize = 8 * 1024;

/// Free buffers kept per thread; beyond this, returned buffers are freed. It bounds what a
/// burst leaves behind, not how many connections can be served at once.
const KEPT: usize = 64;

thread_local! {
    static READ: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static WRITE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A zeroed read buffer of `BUFFER_SIZE` bytes (its length is its capacity, so it can be
/// read into without unsafe code).
pub fn take_read() -> Vec<u8> {
    READ.with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; BUFFER_SIZE])
}

/// Gives a read buffer back. Its bytes are not cleared: a read buffer is only ever read
/// up to what the last read wrote into it.
pub fn give_read(buf: Vec<u8>) {
    if buf.len() == BUFFER_SIZE {
        READ.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < KEPT {
                p.push(buf);
            }
        });
    }
}

/// An empty write buffer with room for a typical response head.
pub fn take_write() -> Vec<u8> {
    WRITE
        .with(|p| p.borrow_mut().pop())
        .unwrap_or_else(|| Vec::with_capacity(BUFFER_SIZE))
}

/// Gives a write buffer back, emptied.
pub fn give_write(mut buf: Vec<u8>) {
    if buf.capacity() <= 4 * BUFFER_SIZE {
        buf.clear();
        WRITE.with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < KEPT {
                p.push(buf);
            }
        });
    }
}

/// Free read and write buffers held by this thread's pools (for tests and metrics).
pub fn pooled() -> (usize, usize) {
    (
        READ.with(|p| p.borrow().len()),
        WRITE.with(|p| p.borrow().len()),
    )
}
