//! Synthetic x86-64 programs: functions that call one another and load from a
//! table of pointers to them, with the relocation table a position-independent
//! program has for that table. A new build lengthens some functions, which moves
//! every function after them, as a new release of a program does; the calls and
//! loads that cross a moved function change although the code around them did not.

use crate::elf::{self, Section};

/// One instruction of a synthetic function.
enum Op {
    /// Bytes that carry no displacement (no `E8`, `E9`, `0F`, `FF`, `48` or `4C`).
    Plain(Vec<u8>),
    /// `call` the function with this index.
    Call(usize),
    /// `lea rax, [rip + d]` of this entry of the pointer table.
    Lea(usize),
}

impl Op {
    fn len(&self) -> u64 {
        match self {
            Op::Plain(b) => b.len() as u64,
            Op::Call(_) => 5,
            Op::Lea(_) => 7,
        }
    }
}

/// Where the code is loaded.
const TEXT_ADDR: u64 = 0x1_0000;
/// Where the relocation table is loaded.
const RELA_ADDR: u64 = 0x400;

/// Bytes without displacements.
fn plain(next: &mut impl FnMut() -> u64, n: usize) -> Vec<u8> {
    (0..n)
        .map(|_| match next() as u8 {
            0xe8 | 0xe9 | 0x0f | 0xff | 0x48 | 0x4c => 0x90,
            b => b,
        })
        .collect()
}

/// A program (ELF `ET_DYN`) of `count` functions made from `seed`, in which
/// function `i` is `grow(i)` bytes longer than with a `grow` of 0 (the bytes are
/// inserted in its middle). Its sections: `.rela.dyn` (a relative relocation for
/// each table entry), `.text` and `.data.rel.ro` (the table of pointers to every
/// function).
pub fn program(seed: u64, count: usize, grow: &dyn Fn(usize) -> usize) -> Vec<u8> {
    let functions: Vec<Vec<Op>> = (0..count)
        .map(|i| {
            let mut next =
                crate::xorshift(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut ops = Vec::new();
            for _ in 0..4 + next() % 12 {
                let n = 2 + (next() % 10) as usize;
                ops.push(Op::Plain(plain(&mut next, n)));
                match next() % 3 {
                    0 => ops.push(Op::Call((next() % count as u64) as usize)),
                    1 => ops.push(Op::Lea((next() % count as u64) as usize)),
                    _ => {}
                }
            }
            let extra = grow(i);
            if extra > 0 {
                let mut next = crate::xorshift(seed ^ 0xabcd ^ i as u64);
                ops.insert(ops.len() / 2, Op::Plain(plain(&mut next, extra)));
            }
            ops.push(Op::Plain(vec![0xc3]));
            ops
        })
        .collect();
    // Functions start at 16-byte boundaries, padded with int3.
    let mut starts = Vec::with_capacity(count);
    let mut at = TEXT_ADDR;
    for f in &functions {
        starts.push(at);
        at = (at + f.iter().map(Op::len).sum::<u64>()).next_multiple_of(16);
    }
    let table = at.next_multiple_of(0x1000) + 0x1000;
    let mut text = Vec::new();
    for (f, &start) in functions.iter().zip(&starts) {
        text.resize((start - TEXT_ADDR) as usize, 0xcc);
        for op in f {
            let end = TEXT_ADDR + text.len() as u64 + op.len();
            let rel = |target: u64| (target.wrapping_sub(end) as i64 as i32).to_le_bytes();
            match op {
                Op::Plain(b) => text.extend_from_slice(b),
                Op::Call(j) => {
                    text.push(0xe8);
                    text.extend_from_slice(&rel(starts[*j]));
                }
                Op::Lea(k) => {
                    text.extend_from_slice(&[0x48, 0x8d, 0x05]);
                    text.extend_from_slice(&rel(table + 8 * *k as u64));
                }
            }
        }
    }
    let pointers: Vec<u8> = starts.iter().flat_map(|s| s.to_le_bytes()).collect();
    let rela: Vec<u8> = starts
        .iter()
        .enumerate()
        .flat_map(|(k, &s)| {
            [table + 8 * k as u64, 8, s]
                .into_iter()
                .flat_map(u64::to_le_bytes)
        })
        .collect();
    let section = |name: &str, kind, flags, addr, entsize, data| Section {
        name: name.to_owned(),
        kind,
        flags,
        addr,
        entsize,
        data,
    };
    elf::file(
        elf::ET_DYN,
        &[
            section(
                ".rela.dyn",
                elf::SHT_RELA,
                elf::SHF_ALLOC,
                RELA_ADDR,
                24,
                rela,
            ),
            section(
                ".text",
                elf::SHT_PROGBITS,
                elf::SHF_ALLOC | elf::SHF_EXECINSTR,
                TEXT_ADDR,
                0,
                text,
            ),
            section(
                ".data.rel.ro",
                elf::SHT_PROGBITS,
                elf::SHF_ALLOC | 1,
                table,
                0,
                pointers,
            ),
        ],
    )
}
