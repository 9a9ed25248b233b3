//! Synthetic Linux kernel modules: ELF64 relocatable files with `.modinfo`, a split
//! `.BTF` and `__versions`, built against a [`Kernel`] whose BTF numbering a new
//! build changes, as a Debian kernel update does. The source transform's tests
//! diff images made of them.

/// How a kernel build numbers its BTF: its type count and string-section length
/// (where its modules' own types and strings start), and the renumbering of its own
/// types and strings against the first build (ids or offsets from `*_from` up move
/// by `*_shift`).
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    /// Types in the kernel's BTF (module type ids start here).
    pub types: u32,
    /// Bytes of the kernel's BTF strings (module string offsets start here).
    pub strings: u32,
    /// Kernel type ids from here up moved by `type_shift`.
    pub type_from: u32,
    /// How far they moved.
    pub type_shift: u32,
    /// Kernel string offsets from here up moved by `string_shift`.
    pub string_from: u32,
    /// How far they moved.
    pub string_shift: u32,
}

/// The kernel of the old image.
pub const OLD_KERNEL: Kernel = Kernel {
    types: 1000,
    strings: 20_000,
    type_from: u32::MAX,
    type_shift: 0,
    string_from: u32::MAX,
    string_shift: 0,
};

/// The kernel of the new image: three types and ten bytes of strings inserted.
pub const NEW_KERNEL: Kernel = Kernel {
    types: 1003,
    strings: 20_010,
    type_from: 400,
    type_shift: 3,
    string_from: 5000,
    string_shift: 10,
};

impl Kernel {
    fn base_type(&self, id: u32) -> u32 {
        if id >= self.type_from {
            id + self.type_shift
        } else {
            id
        }
    }
    fn base_string(&self, off: u32) -> u32 {
        if off >= self.string_from {
            off + self.string_shift
        } else {
            off
        }
    }
}

/// A type reference of a module: to a kernel type, or to the module's own type
/// number `n`.
#[derive(Debug, Clone, Copy)]
enum TypeRef {
    Kernel(u32),
    Own(u32),
}

/// A string reference: a kernel string offset, or the module's own string `n`.
#[derive(Debug, Clone, Copy)]
enum StrRef {
    Kernel(u32),
    Own(u32),
}

/// One BTF record in kernel-independent form.
#[derive(Debug, Clone)]
enum Record {
    Ptr(TypeRef),
    Struct(StrRef, [(StrRef, TypeRef); 2]),
    FuncProto(TypeRef, TypeRef),
    Int(StrRef),
    Array(TypeRef),
}

/// The records of a module: `count` of them, picked by `seed`.
#[derive(Debug)]
pub struct ModuleTypes(Vec<Record>);

impl ModuleTypes {
    /// `count` records (at least 1), deterministic for `seed`.
    pub fn new(seed: u64, count: u32) -> Self {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut next = move |n: u32| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 16) % u64::from(n.max(1))) as u32
        };
        let mut records = Vec::new();
        for _ in 0..count {
            let ty = |next: &mut dyn FnMut(u32) -> u32| {
                if next(2) == 0 {
                    TypeRef::Kernel(next(OLD_KERNEL.types))
                } else {
                    TypeRef::Own(next(count))
                }
            };
            let st = |next: &mut dyn FnMut(u32) -> u32| {
                if next(3) == 0 {
                    StrRef::Kernel(next(OLD_KERNEL.strings))
                } else {
                    StrRef::Own(next(count))
                }
            };
            let r = match next(5) {
                0 => Record::Ptr(ty(&mut next)),
                1 => Record::Struct(
                    st(&mut next),
                    [
                        (st(&mut next), ty(&mut next)),
                        (st(&mut next), ty(&mut next)),
                    ],
                ),
                2 => Record::FuncProto(ty(&mut next), ty(&mut next)),
                3 => Record::Int(st(&mut next)),
                _ => Record::Array(ty(&mut next)),
            };
            records.push(r);
        }
        Self(records)
    }

    /// Moves the last `n` records to the front, as a new build's type order may.
    pub fn rotate(mut self, n: usize) -> Self {
        let n = n.min(self.0.len());
        self.0.rotate_right(n);
        let len = self.0.len() as u32;
        let moved = |i: u32| (i + n as u32) % len;
        for r in &mut self.0 {
            let fix = |t: &mut TypeRef| {
                if let TypeRef::Own(i) = t {
                    *i = moved(*i);
                }
            };
            match r {
                Record::Ptr(t) | Record::Array(t) => fix(t),
                Record::Struct(_, m) => m.iter_mut().for_each(|(_, t)| fix(t)),
                Record::FuncProto(a, b) => {
                    fix(a);
                    fix(b);
                }
                Record::Int(_) => {}
            }
        }
        self
    }

    /// The `.BTF` section of this module built against `k`.
    pub fn btf(&self, seed: u64, k: &Kernel) -> Vec<u8> {
        // Own strings: "\0" then "m<seed>_<n>\0" for each n.
        let mut strings = vec![0u8];
        let mut own_offsets = Vec::new();
        for n in 0..self.0.len() {
            own_offsets.push(strings.len() as u32);
            strings.extend_from_slice(format!("m{seed}_{n}").as_bytes());
            strings.push(0);
        }
        let ty = |t: TypeRef| match t {
            TypeRef::Kernel(id) => k.base_type(id),
            TypeRef::Own(n) => k.types + n,
        };
        let st = |s: StrRef| match s {
            StrRef::Kernel(off) => k.base_string(off),
            StrRef::Own(n) => k.strings + own_offsets[n as usize],
        };
        let mut t: Vec<u32> = Vec::new();
        for r in &self.0 {
            match *r {
                Record::Ptr(a) => t.extend([0, 2 << 24, ty(a)]),
                Record::Struct(name, m) => {
                    t.extend([st(name), 4 << 24 | 2, 16]);
                    for (i, (mn, mt)) in m.into_iter().enumerate() {
                        t.extend([st(mn), ty(mt), 64 * i as u32]);
                    }
                }
                Record::FuncProto(ret, p) => t.extend([0, 13 << 24 | 1, ty(ret), 0, ty(p)]),
                Record::Int(name) => t.extend([st(name), 1 << 24, 4, 0x0100_0020]),
                Record::Array(a) => t.extend([0, 3 << 24, 0, ty(a), 1, 8]),
            }
        }
        btf_blob(&t, &strings)
    }
}

/// A BTF blob: the 24-byte header, the type records `types` (as u32 words), then
/// the string section `strings`.
pub fn btf_blob(types: &[u32], strings: &[u8]) -> Vec<u8> {
    let types: Vec<u8> = types.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut b = vec![0x9f, 0xeb, 1, 0];
    for v in [
        24u32,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b.extend_from_slice(&types);
    b.extend_from_slice(strings);
    b
}

/// A `__versions` table: 64-byte entries of CRC and NUL-padded symbol name.
pub fn versions(symbols: &[(String, u32)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (name, crc) in symbols {
        b.extend_from_slice(&u64::from(*crc).to_le_bytes());
        let mut field = [0u8; 56];
        let n = name.len().min(55);
        field[..n].copy_from_slice(&name.as_bytes()[..n]);
        b.extend_from_slice(&field);
    }
    b
}

/// An x86-64 ELF relocatable file (a kernel module) named `name` in `.modinfo`,
/// with the given sections after it, in order, then `.shstrtab` and the section
/// header table.
pub fn kernel_module(name: &str, sections: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let modinfo = format!("license=GPL\0name={name}\0vermagic=6.1.0 SMP\0").into_bytes();
    let mut all = vec![crate::elf::Section::data(".modinfo", modinfo)];
    all.extend(
        sections
            .iter()
            .map(|(n, data)| crate::elf::Section::data(n, data.clone())),
    );
    crate::elf::file(crate::elf::ET_REL, &all)
}

/// An image of `count` modules (each padded to 512 bytes, as in a tar archive,
/// with 4 KiB of other data between them) built against `k`: module `i` has
/// `records` BTF records, 40 symbol versions whose CRCs `crc` gives from the symbol
/// number, and 2 KiB of `.text`, four bytes of which `patched` changes. `reorder`
/// moves the last 5 records of module 0 to the front.
pub fn module_image(
    k: &Kernel,
    count: u64,
    records: u32,
    crc: impl Fn(u32) -> u32,
    patched: bool,
    reorder: bool,
) -> Vec<u8> {
    let mut img = Vec::new();
    for i in 0..count {
        img.extend(crate::noise(4096, 1000 + i));
        let mut types = ModuleTypes::new(i, records);
        if reorder && i == 0 {
            types = types.rotate(5);
        }
        let symbols: Vec<(String, u32)> = (0..40)
            .map(|s| {
                (
                    format!("symbol_{}", (i as u32 * 7 + s) % 97),
                    crc((i as u32 * 7 + s) % 97),
                )
            })
            .collect();
        let mut text = crate::noise(2048, 500 + i);
        if patched {
            text[100..104].iter_mut().for_each(|b| *b ^= 0xff);
        }
        let module = kernel_module(
            &format!("mod{i}"),
            &[
                (".text", text),
                (".BTF", types.btf(i, k)),
                ("__versions", versions(&symbols)),
            ],
        );
        img.extend_from_slice(&module);
        img.resize(img.len().next_multiple_of(512), 0);
    }
    img
}
