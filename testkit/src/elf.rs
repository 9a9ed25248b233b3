//! ELF64 little-endian x86-64 files built from a list of sections, for the tests of
//! the source transform (kernel modules, programs).

/// `ET_REL`: a relocatable file, as kernel modules are.
pub const ET_REL: u16 = 1;
/// `ET_DYN`: a position-independent program or shared library.
pub const ET_DYN: u16 = 3;
/// `SHT_PROGBITS`.
pub const SHT_PROGBITS: u32 = 1;
/// `SHT_RELA`.
pub const SHT_RELA: u32 = 4;
/// `SHF_WRITE`.
pub const SHF_WRITE: u64 = 1;
/// `SHF_ALLOC`.
pub const SHF_ALLOC: u64 = 2;
/// `SHF_EXECINSTR`.
pub const SHF_EXECINSTR: u64 = 4;

/// One section of a file.
#[derive(Debug, Clone)]
pub struct Section {
    /// Its name.
    pub name: String,
    /// `sh_type`.
    pub kind: u32,
    /// `sh_flags`.
    pub flags: u64,
    /// `sh_addr`: where it is loaded.
    pub addr: u64,
    /// `sh_entsize`.
    pub entsize: u64,
    /// Its bytes.
    pub data: Vec<u8>,
}

impl Section {
    /// A `PROGBITS` section without flags or address.
    pub fn data(name: &str, data: Vec<u8>) -> Self {
        Self {
            name: name.to_owned(),
            kind: SHT_PROGBITS,
            flags: 0,
            addr: 0,
            entsize: 0,
            data,
        }
    }
}

/// An ELF64 little-endian x86-64 file of type `e_type`: its header, a program
/// header (`PT_LOAD`) for each section with `SHF_ALLOC`, then `sections`, in order
/// (each at an 8-byte boundary), then `.shstrtab` and the section header table.
pub fn file(e_type: u16, sections: &[Section]) -> Vec<u8> {
    file_for(62, e_type, sections)
}

/// [`file`] for the machine `e_machine` (62 x86-64, 183 AArch64).
pub fn file_for(e_machine: u16, e_type: u16, sections: &[Section]) -> Vec<u8> {
    let loaded = sections.iter().filter(|s| s.flags & SHF_ALLOC != 0).count();
    let mut shstrtab = vec![0u8];
    let mut out = vec![0u8; 64 + 56 * loaded];
    // (name offset, section, file offset)
    let mut headers: Vec<(u32, Option<&Section>, u64)> = vec![(0, None, 0)];
    for s in sections {
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        headers.push((shstrtab.len() as u32, Some(s), out.len() as u64));
        shstrtab.extend_from_slice(s.name.as_bytes());
        shstrtab.push(0);
        out.extend_from_slice(&s.data);
    }
    let shstr_name = shstrtab.len() as u32;
    shstrtab.extend_from_slice(b".shstrtab\0");
    let shstr_at = out.len() as u64;
    out.extend_from_slice(&shstrtab);
    while !out.len().is_multiple_of(8) {
        out.push(0);
    }
    let shoff = out.len() as u64;
    let mut header = |name: u32, kind: u32, s: Option<&Section>, off: u64, size: u64| {
        out.extend_from_slice(&name.to_le_bytes());
        out.extend_from_slice(&kind.to_le_bytes());
        out.extend_from_slice(&s.map_or(0, |s| s.flags).to_le_bytes());
        out.extend_from_slice(&s.map_or(0, |s| s.addr).to_le_bytes());
        out.extend_from_slice(&off.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&[0u8; 8]); // link, info
        out.extend_from_slice(&1u64.to_le_bytes()); // addralign
        out.extend_from_slice(&s.map_or(0, |s| s.entsize).to_le_bytes());
    };
    for &(name, s, off) in &headers {
        let (kind, size) = s.map_or((0, 0), |s| (s.kind, s.data.len() as u64));
        header(name, kind, s, off, size);
    }
    header(shstr_name, 3, None, shstr_at, shstrtab.len() as u64);
    let mut at = 64;
    for &(_, s, off) in &headers {
        let Some(s) = s.filter(|s| s.flags & SHF_ALLOC != 0) else {
            continue;
        };
        // PF_R, and PF_X for code, PF_W for writable data.
        let flags = 4 | u32::from(s.flags & SHF_EXECINSTR != 0) | (s.flags as u32 & 1) << 1;
        let size = s.data.len() as u64;
        let mut p = Vec::with_capacity(56);
        p.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        p.extend_from_slice(&flags.to_le_bytes());
        for field in [off, s.addr, s.addr, size, size, 1] {
            p.extend_from_slice(&field.to_le_bytes());
        }
        out[at..at + 56].copy_from_slice(&p);
        at += 56;
    }
    let count = headers.len() + 1;
    let mut h = Vec::with_capacity(64);
    h.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    h.extend_from_slice(&e_type.to_le_bytes());
    h.extend_from_slice(&e_machine.to_le_bytes());
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(&0u64.to_le_bytes()); // entry
    let phoff: u64 = if loaded > 0 { 64 } else { 0 };
    h.extend_from_slice(&phoff.to_le_bytes());
    h.extend_from_slice(&shoff.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h.extend_from_slice(&64u16.to_le_bytes()); // ehsize
    let phentsize: u16 = if loaded > 0 { 56 } else { 0 };
    h.extend_from_slice(&phentsize.to_le_bytes());
    h.extend_from_slice(&(loaded as u16).to_le_bytes());
    h.extend_from_slice(&64u16.to_le_bytes()); // shentsize
    h.extend_from_slice(&(count as u16).to_le_bytes());
    h.extend_from_slice(&((count - 1) as u16).to_le_bytes());
    out[..64].copy_from_slice(&h);
    out
}
