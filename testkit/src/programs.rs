//! Synthetic x86-64 and AArch64 programs: functions that call one another and
//! load from a table of pointers to them, with the relocation table a
//! position-independent program has for that table. A new build lengthens some
//! functions, which moves every function after them, as a new release of a
//! program does; the calls and loads that cross a moved function change although
//! the code around them did not.

use crate::elf::{self, Section};

/// The machine a synthetic program is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Machine {
    /// x86-64: `call rel32`, `lea rax, [rip + d]`.
    X86_64,
    /// AArch64: `bl`, `adrp x0` then `add x0, x0, #lo12`.
    Aarch64,
}

impl Machine {
    fn number(self) -> u16 {
        match self {
            Machine::X86_64 => 62,
            Machine::Aarch64 => 183,
        }
    }

    /// `R_X86_64_RELATIVE` or `R_AARCH64_RELATIVE`.
    fn relative(self) -> u64 {
        match self {
            Machine::X86_64 => 8,
            Machine::Aarch64 => 1027,
        }
    }
}

/// One instruction of a synthetic function.
enum Op {
    /// Bytes that carry no address (x86-64: no `E8`, `E9`, `0F`, `FF`, `48` or
    /// `4C`; AArch64: whole words that are not `B`, `BL` or `ADRP`).
    Plain(Vec<u8>),
    /// Call the function with this index.
    Call(usize),
    /// Load the address of this entry of the pointer table.
    Lea(usize),
}

impl Op {
    fn len(&self, m: Machine) -> u64 {
        match (self, m) {
            (Op::Plain(b), _) => b.len() as u64,
            (Op::Call(_), Machine::X86_64) => 5,
            (Op::Lea(_), Machine::X86_64) => 7,
            (Op::Call(_), Machine::Aarch64) => 4,
            (Op::Lea(_), Machine::Aarch64) => 8,
        }
    }
}

/// Where the code is loaded.
const TEXT_ADDR: u64 = 0x1_0000;
/// Where the relocation table is loaded.
const RELA_ADDR: u64 = 0x400;

/// `n` bytes (x86-64) or `n` words (AArch64) without addresses.
fn plain(m: Machine, next: &mut impl FnMut() -> u64, n: usize) -> Vec<u8> {
    match m {
        Machine::X86_64 => (0..n)
            .map(|_| match next() as u8 {
                0xe8 | 0xe9 | 0x0f | 0xff | 0x48 | 0x4c => 0x90,
                b => b,
            })
            .collect(),
        Machine::Aarch64 => (0..n)
            .flat_map(|_| {
                // Data-processing words (bits 28..26 = 100): never B, BL or ADRP.
                let w = (next() as u32 & !0x1c00_0000) | 0x1000_0000;
                let w = if w & 0x9f00_0000 == 0x9000_0000 {
                    w ^ 0x0100_0000
                } else {
                    w
                };
                w.to_le_bytes()
            })
            .collect(),
    }
}

/// An x86-64 program: [`program_for`] with [`Machine::X86_64`].
pub fn program(seed: u64, count: usize, grow: &dyn Fn(usize) -> usize) -> Vec<u8> {
    program_for(Machine::X86_64, seed, count, grow)
}

/// A program (ELF `ET_DYN`) for `m` of `count` functions made from `seed`, in
/// which function `i` is `grow(i)` bytes (x86-64) or words (AArch64) longer than
/// with a `grow` of 0 (inserted in its middle). Its sections: `.rela.dyn` (a
/// relative relocation for each table entry), `.text` and `.data.rel.ro` (the
/// table of pointers to every function).
pub fn program_for(m: Machine, seed: u64, count: usize, grow: &dyn Fn(usize) -> usize) -> Vec<u8> {
    let functions: Vec<Vec<Op>> = (0..count)
        .map(|i| {
            let mut next =
                crate::xorshift(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut ops = Vec::new();
            for _ in 0..4 + next() % 12 {
                let n = match m {
                    Machine::X86_64 => 2 + (next() % 10) as usize,
                    Machine::Aarch64 => 1 + (next() % 3) as usize,
                };
                ops.push(Op::Plain(plain(m, &mut next, n)));
                match next() % 3 {
                    0 => ops.push(Op::Call((next() % count as u64) as usize)),
                    1 => ops.push(Op::Lea((next() % count as u64) as usize)),
                    _ => {}
                }
            }
            let extra = grow(i);
            if extra > 0 {
                let mut next = crate::xorshift(seed ^ 0xabcd ^ i as u64);
                ops.insert(ops.len() / 2, Op::Plain(plain(m, &mut next, extra)));
            }
            ops.push(Op::Plain(match m {
                Machine::X86_64 => vec![0xc3],
                Machine::Aarch64 => 0xd65f_03c0u32.to_le_bytes().to_vec(), // ret
            }));
            ops
        })
        .collect();
    // Functions start at 16-byte boundaries, padded with int3 or zero words.
    let mut starts = Vec::with_capacity(count);
    let mut at = TEXT_ADDR;
    for f in &functions {
        starts.push(at);
        at = (at + f.iter().map(|op| op.len(m)).sum::<u64>()).next_multiple_of(16);
    }
    let table = at.next_multiple_of(0x1000) + 0x1000;
    let pad = match m {
        Machine::X86_64 => 0xcc,
        Machine::Aarch64 => 0,
    };
    let mut text = Vec::new();
    for (f, &start) in functions.iter().zip(&starts) {
        text.resize((start - TEXT_ADDR) as usize, pad);
        for op in f {
            let here = TEXT_ADDR + text.len() as u64;
            match (op, m) {
                (Op::Plain(b), _) => text.extend_from_slice(b),
                (Op::Call(j), Machine::X86_64) => {
                    text.push(0xe8);
                    text.extend_from_slice(&rel32(here + 5, starts[*j]));
                }
                (Op::Lea(k), Machine::X86_64) => {
                    text.extend_from_slice(&[0x48, 0x8d, 0x05]);
                    text.extend_from_slice(&rel32(here + 7, table + 8 * *k as u64));
                }
                (Op::Call(j), Machine::Aarch64) => {
                    let d = (starts[*j].wrapping_sub(here) as i64 / 4) as u32;
                    text.extend_from_slice(&(0x9400_0000 | d & 0x03ff_ffff).to_le_bytes());
                }
                (Op::Lea(k), Machine::Aarch64) => {
                    let target = table + 8 * *k as u64;
                    let pages = ((target & !0xfff).wrapping_sub(here & !0xfff) as i64 >> 12) as u32;
                    let adrp = 0x9000_0000 | (pages & 3) << 29 | (pages >> 2 & 0x7_ffff) << 5;
                    let add = 0x9100_0000 | ((target & 0xfff) as u32) << 10;
                    text.extend_from_slice(&adrp.to_le_bytes());
                    text.extend_from_slice(&add.to_le_bytes());
                }
            }
        }
    }
    let pointers: Vec<u8> = starts.iter().flat_map(|s| s.to_le_bytes()).collect();
    let rela: Vec<u8> = starts
        .iter()
        .enumerate()
        .flat_map(|(k, &s)| {
            [table + 8 * k as u64, m.relative(), s]
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
    elf::file_for(
        m.number(),
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
                elf::SHF_ALLOC | elf::SHF_WRITE,
                table,
                0,
                pointers,
            ),
        ],
    )
}

/// The x86-64 displacement from `end` to `target`.
fn rel32(end: u64, target: u64) -> [u8; 4] {
    (target.wrapping_sub(end) as i64 as i32).to_le_bytes()
}
