//! The diff's source-transform learning on arbitrary image pairs: the ELF section
//! tables, `.modinfo`, `__versions` and BTF it parses come from the images, which
//! the diff does not trust. Never a panic, and what it learns is consistent (see
//! `deltaward_engine::fuzzing::transform`). Input: `[old_len: u32][old][new]`.
//! Seeds: the kernel-module and program images of the format vectors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let split = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (old, new) = rest.split_at(split);
    deltaward_engine::fuzzing::transform(old, new);
});
