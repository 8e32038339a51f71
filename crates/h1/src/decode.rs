//! Request body decoders: by `Content-Length`, or chunked (RFC 9112 §7.1), strictly: hex
//! sizes that fit 63 bits, extensions without control characters and at most 16 KiB per
//! body (hyper's limit), CRLF after every line and after chunk data, trailer lines of
//! bounded size (read and dropped, §7.1.2 allows it).

use crate::BodyErrorKind;

/// Extension bytes allowed per body.
const MAX_EXTENSIONS: usize = 16 * 1024;

/// One step over the bytes at hand.
#[derive(Debug, PartialEq, Eq)]
pub struct Step {
    /// Bytes of the input used up (data and framing).
    pub consumed: usize,
    /// Body data within the input: `start..start + len`.
    pub data: Option<(usize, usize)>,
    /// The body is complete.
    pub done: bool,
}

#[derive(Debug)]
pub enum Decoder {
    Length(u64),
    Chunked(Chunked),
}

impl Decoder {
    pub fn length(n: u64) -> Decoder {
        Decoder::Length(n)
    }

    pub fn chunked(max_trailers: usize) -> Decoder {
        Decoder::Chunked(Chunked {
            state: State::Size {
                value: 0,
                digits: 0,
            },
            extensions: 0,
            trailers: 0,
            max_trailers,
        })
    }

    /// Decodes from `input` until it yields data, completes, or `input` is used up.
    pub fn step(&mut self, input: &[u8]) -> Result<Step, BodyErrorKind> {
        match self {
            Decoder::Length(rest) => {
                let n = (*rest).min(input.len() as u64) as usize;
                *rest -= n as u64;
                Ok(Step {
                    consumed: n,
                    data: (n > 0).then_some((0, n)),
                    done: *rest == 0,
                })
            }
            Decoder::Chunked(c) => c.step(input),
        }
    }

    /// What is left to read, when it is known.
    pub fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Chunked(c) => matches!(c.state, State::Done).then_some(0),
        }
    }
}

#[derive(Debug)]
pub struct Chunked {
    state: State,
    extensions: usize,
    trailers: usize,
    max_trailers: usize,
}

#[derive(Clone, Copy, Debug)]
enum State {
    Size {
        value: u64,
        digits: u8,
    },
    /// Whitespace after the size, before `;` or CR.
    SizeSpace {
        value: u64,
    },
    Extension {
        value: u64,
    },
    SizeLf {
        value: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// In a trailer line that has `len` bytes so far.
    Trailer {
        len: usize,
    },
    TrailerLf {
        empty: bool,
    },
    Done,
}

impl Chunked {
    fn step(&mut self, input: &[u8]) -> Result<Step, BodyErrorKind> {
        let mut i = 0;
        while i < input.len() {
            if let State::Data(rest) = self.state {
                let n = rest.min((input.len() - i) as u64) as usize;
                self.state = if rest == n as u64 {
                    State::DataCr
                } else {
                    State::Data(rest - n as u64)
                };
                return Ok(Step {
                    consumed: i + n,
                    data: Some((i, n)),
                    done: false,
                });
            }
            self.state = self.byte(input[i])?;
            i += 1;
            if let State::Done = self.state {
                return Ok(Step {
                    consumed: i,
                    data: None,
                    done: true,
                });
            }
        }
        Ok(Step {
            consumed: i,
            data: None,
            done: matches!(self.state, State::Done),
        })
    }

    fn byte(&mut self, b: u8) -> Result<State, BodyErrorKind> {
        use BodyErrorKind::Framing as Bad;
        Ok(match self.state {
            State::Size { value, digits } => match (b as char).to_digit(16) {
                Some(d) if digits < 15 => State::Size {
                    value: value * 16 + u64::from(d),
                    digits: digits + 1,
                },
                Some(_) => return Err(Bad),
                None if digits == 0 => return Err(Bad),
                None => self.after_size(value, b)?,
            },
            State::SizeSpace { value } => self.after_size(value, b)?,
            State::Extension { value } => {
                self.extensions += 1;
                if self.extensions > MAX_EXTENSIONS {
                    return Err(Bad);
                }
                match b {
                    b'\r' => State::SizeLf { value },
                    b'\t' => State::Extension { value },
                    0..=0x1f | 0x7f => return Err(Bad),
                    _ => State::Extension { value },
                }
            }
            State::SizeLf { value } => match (b, value) {
                (b'\n', 0) => State::Trailer { len: 0 },
                (b'\n', n) => State::Data(n),
                _ => return Err(Bad),
            },
            State::Data(_) => unreachable!("data is taken in bulk by step"),
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => State::Size {
                value: 0,
                digits: 0,
            },
            State::DataCr | State::DataLf => return Err(Bad),
            State::Trailer { len } => {
                self.trailers += 1;
                if self.trailers > self.max_trailers {
                    return Err(Bad);
                }
                match b {
                    b'\r' => State::TrailerLf { empty: len == 0 },
                    b'\t' => State::Trailer { len: len + 1 },
                    0..=0x1f | 0x7f => return Err(Bad),
                    _ => State::Trailer { len: len + 1 },
                }
            }
            State::TrailerLf { empty: true } if b == b'\n' => State::Done,
            State::TrailerLf { empty: false } if b == b'\n' => State::Trailer { len: 0 },
            State::TrailerLf { .. } | State::Done => return Err(Bad),
        })
    }

    fn after_size(&mut self, value: u64, b: u8) -> Result<State, BodyErrorKind> {
        Ok(match b {
            b' ' | b'\t' => State::SizeSpace { value },
            b';' => State::Extension { value },
            b'\r' => State::SizeLf { value },
            _ => return Err(BodyErrorKind::Framing),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` fed in pieces of `piece` bytes: the body, or the error.
    fn decode(input: &[u8], piece: usize) -> Result<Vec<u8>, BodyErrorKind> {
        let mut d = Decoder::chunked(1024);
        let (mut out, mut at) = (Vec::new(), 0);
        let mut held: Vec<u8> = Vec::new();
        loop {
            if held.is_empty() {
                if at >= input.len() {
                    return Err(BodyErrorKind::Incomplete);
                }
                let end = (at + piece).min(input.len());
                held.extend_from_slice(&input[at..end]);
                at = end;
            }
            let s = d.step(&held)?;
            if let Some((start, len)) = s.data {
                out.extend_from_slice(&held[start..start + len]);
            }
            held.drain(..s.consumed);
            if s.done {
                assert!(held.is_empty() && at == input.len(), "bytes after the body");
                return Ok(out);
            }
        }
    }

    #[test]
    fn chunked_bodies_decode_in_any_pieces() {
        let body =
            b"3;ext=\"v\"\r\nabc\r\n4;a;b=c\r\ndefg\r\nA \r\n0123456789\r\n0\r\nX-T: 1\r\n\r\n";
        for piece in [1, 2, 3, 7, 100] {
            assert_eq!(
                decode(body, piece).unwrap(),
                b"abcdefg0123456789",
                "{piece}"
            );
        }
        assert_eq!(decode(b"0\r\n\r\n", 1).unwrap(), b"");
    }

    #[test]
    fn malformed_chunks_are_errors() {
        let long_ext = [b"3;".as_slice(), &[b'a'; 20_000], b"\r\nabc\r\n0\r\n\r\n"].concat();
        let long_trailer = [b"0\r\nX: ".as_slice(), &[b'a'; 2_000], b"\r\n\r\n"].concat();
        let bad: [&[u8]; 10] = [
            b"ffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
            b"1000000000000000\r\n",
            b"zz\r\nabc\r\n0\r\n\r\n",
            b"0x3\r\nabc\r\n0\r\n\r\n",
            b"3\r\nabcX\r\n0\r\n\r\n",
            b"3\nabc\r\n0\r\n\r\n",
            b"3;a\x01\r\nabc\r\n0\r\n\r\n",
            b"\r\n3\r\nabc\r\n0\r\n\r\n",
            &long_ext,
            &long_trailer,
        ];
        for b in bad {
            let shown = String::from_utf8_lossy(&b[..b.len().min(30)]);
            assert_eq!(decode(b, 5), Err(BodyErrorKind::Framing), "{shown:?}");
        }
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let mut d = Decoder::length(5);
        let s = d.step(b"abc").unwrap();
        assert_eq!(
            s,
            Step {
                consumed: 3,
                data: Some((0, 3)),
                done: false
            }
        );
        let s = d.step(b"deGET").unwrap();
        assert_eq!(
            s,
            Step {
                consumed: 2,
                data: Some((0, 2)),
                done: true
            }
        );
    }
}
