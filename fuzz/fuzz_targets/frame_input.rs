//! The input layout the decoder targets share, so that real frames of the vector
//! patch can be their seeds (`fuzz/corpus/<target>/`, made by
//! `engine/tests/fuzz_seeds.rs`):
//!
//! ```text
//! [out_len: u32 LE][window_len: u32 LE][flags: u8][window: window_len bytes][payload]
//! ```
//!
//! `out_len` is capped at [`MAX_OUT`], `window_len` at what follows the flags. The
//! same bytes also feed a round trip: the payload part is encoded as data against
//! the window, with coder settings taken from the flags.

use deltaward_engine::fuzzing::ZstdSettings;

/// Largest frame output a fuzz input may ask for.
pub const MAX_OUT: usize = 1 << 20;
/// Largest data the round trip encodes (encoding costs far more than decoding).
pub const MAX_ROUND_TRIP: usize = 64 << 10;

/// One fuzz input, split.
pub struct FrameInput<'a> {
    /// The frame's output length.
    pub out_len: usize,
    /// Coder settings for the round trip.
    pub flags: u8,
    /// The reference window.
    pub window: &'a [u8],
    /// The payload to decode (and, cut to [`MAX_ROUND_TRIP`], the data to encode).
    pub payload: &'a [u8],
}

impl<'a> FrameInput<'a> {
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        let (head, rest) = data.split_first_chunk::<9>()?;
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let out_len = (word(0) as usize).min(MAX_OUT);
        let window_len = (word(4) as usize).min(rest.len());
        let (window, payload) = rest.split_at(window_len);
        Some(Self {
            out_len,
            flags: head[8],
            window,
            payload,
        })
    }

    /// zstd level 1 to 4, long-distance matching or not.
    pub fn zstd_settings(&self) -> ZstdSettings {
        ZstdSettings {
            level: 1 + i32::from(self.flags & 3),
            long_distance: self.flags & 4 != 0,
        }
    }

    /// The data the round trip encodes.
    pub fn data(&self) -> &'a [u8] {
        &self.payload[..self.payload.len().min(MAX_ROUND_TRIP)]
    }
}

/// Decodes into an output of `out_len` bytes; on success, decodes again into an
/// output filled differently and requires the same bytes, so a decode that reports
/// success has written every byte of its output. Returns the output.
pub fn decode_fully(
    out_len: usize,
    decode: impl Fn(&mut [u8]) -> Result<(), &'static str>,
) -> Result<Vec<u8>, &'static str> {
    let mut a = vec![0u8; out_len];
    decode(&mut a)?;
    let mut b = vec![0xffu8; out_len];
    decode(&mut b).expect("the same input decoded once and then failed");
    assert!(
        a == b,
        "a successful decode left bytes of its output unwritten"
    );
    Ok(a)
}

/// A payload the encoder made from `data` decodes to exactly `data`, and refuses an
/// output one byte longer than it declares.
pub fn check_round_trip(
    data: &[u8],
    payload: &[u8],
    decode: impl Fn(&[u8], &mut [u8]) -> Result<(), &'static str>,
) {
    let out = decode_fully(data.len(), |out| decode(payload, out))
        .unwrap_or_else(|e| panic!("a payload made by the encoder does not decode: {e}"));
    assert!(
        out == data,
        "a payload made by the encoder decodes to other data"
    );
    let mut longer = vec![0u8; data.len() + 1];
    assert!(
        decode(payload, &mut longer).is_err(),
        "a payload decoded into a longer output than it declares"
    );
}
