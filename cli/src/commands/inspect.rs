//! `deltaward inspect`: show a patch's manifest. Nothing is verified, so everything
//! shown is untrusted: text fields are printed with control characters escaped, and
//! memory is bounded before the manifest is parsed.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{BufReader, Write},
    path::PathBuf,
};

use anyhow::{Context, Result};
use clap::Args;
use deltaward_engine::{
    format, read_unverified, Manifest, RegionKind, SourceTransform, UnverifiedHead,
};
use serde_json::json;

/// Show a patch's manifest (no key needed; nothing here is verified).
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The patch.
    patch: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Write the signed manifest bytes to FILE (verify with minisign -V).
    #[arg(long, value_name = "FILE", requires = "extract_signature")]
    extract_manifest: Option<PathBuf>,
    /// Write the minisign signature to FILE.
    #[arg(long, value_name = "FILE", requires = "extract_manifest")]
    extract_signature: Option<PathBuf>,
    /// Refuse manifests whose bytes and parsed frames need more memory than this, in MiB.
    #[arg(long, default_value = "256", value_name = "MIB", value_parser = crate::args::mib)]
    memory_limit: u64,
}

/// Untrusted text made safe to show (control and bidirectional characters removed).
fn clean(text: &str) -> String {
    deltaward_release::notice::printable(text)
}

pub fn run(a: InspectArgs) -> Result<()> {
    let file =
        File::open(&a.patch).with_context(|| format!("opening patch {}", a.patch.display()))?;
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let UnverifiedHead {
        header,
        manifest_bytes,
        signature,
    } = read_unverified(&mut reader, a.memory_limit)
        .with_context(|| format!("reading {}", a.patch.display()))?;
    if let (Some(m), Some(s)) = (&a.extract_manifest, &a.extract_signature) {
        deltaward_engine::write_file(m, &manifest_bytes)?;
        deltaward_engine::write_file(s, signature.as_bytes())?;
    }
    let m = Manifest::parse(&manifest_bytes)
        .with_context(|| format!("parsing the manifest of {}", a.patch.display()))?;
    drop(manifest_bytes);
    let comment = signature
        .lines()
        .find_map(|l| l.strip_prefix("trusted comment: "))
        .unwrap_or("")
        .to_owned();
    let mut out = std::io::stdout().lock();
    if a.json {
        print_json(&mut out, &m, header.manifest_len, &comment)?;
    } else {
        print_text(&mut out, &a.patch, &m, header.manifest_len, &comment)?;
    }
    Ok(())
}

fn print_json(out: &mut impl Write, m: &Manifest, manifest_len: u32, comment: &str) -> Result<()> {
    let head = json!({
        "format_version": format::VERSION,
        "verified": false,
        "tool": clean(&m.tool),
        "options": clean(&m.options),
        "source": {"size": m.source_size, "blake3": m.source_hash.to_string()},
        "target": {"size": m.target_size, "blake3": m.target_hash.to_string()},
        "block_size": m.block_size,
        "max_window": m.max_window,
        "max_frame_len": m.max_frame_len,
        "apply_memory": m.apply_memory(),
        "manifest_len": manifest_len,
        "payload_len": m.payload_len,
        "trusted_comment": clean(comment),
        "transform": m.transform.as_ref().map(|t| {
            let s = TransformSummary::of(t);
            json!({
                "btf_regions": s.btf,
                "btf_regions_with_own_maps": s.own,
                "versions_regions": s.versions,
                "type_map_entries": t.types.entries().len(),
                "string_map_entries": t.strings.entries().len(),
                "crc_map_entries": t.crcs.entries().len(),
                "code_regions": s.code,
                "relocation_regions": s.rela,
                "pointer_regions": s.pointers,
                "address_maps": t.spaces.len(),
                "address_map_entries": s.addresses,
            })
        }),
    });
    // The frames are streamed one by one: a manifest may hold half a million.
    let head = head.to_string();
    let open = head.strip_suffix('}').unwrap_or(&head);
    write!(out, "{open},\"frames\":[")?;
    for (i, f) in m.frames.iter().enumerate() {
        let frame = json!({
            "kind": f.kind.name(),
            "target_offset": f.target_offset,
            "target_len": f.target_len,
            "source_offset": f.source_offset,
            "source_len": f.source_len,
            "payload_offset": f.payload_offset,
            "payload_len": f.payload_len,
            "payload_blake3": f.payload_hash.to_string(),
            "output_blake3": f.output_hash.to_string(),
        });
        write!(out, "{}{frame}", if i == 0 { "" } else { "," })?;
    }
    writeln!(out, "]}}")?;
    Ok(())
}

fn print_text(
    out: &mut impl Write,
    patch: &std::path::Path,
    m: &Manifest,
    manifest_len: u32,
    comment: &str,
) -> Result<()> {
    let mut kinds = BTreeMap::<&str, (u64, u64, u64)>::new();
    for f in &m.frames {
        let e = kinds.entry(f.kind.name()).or_default();
        e.0 += 1;
        e.1 += f.target_len;
        e.2 += f.payload_len;
    }
    writeln!(
        out,
        "patch       {} (format v{}, NOT VERIFIED: use `deltaward verify`)",
        patch.display(),
        format::VERSION
    )?;
    writeln!(out, "tool        {}", clean(&m.tool))?;
    writeln!(out, "options     {}", clean(&m.options))?;
    writeln!(
        out,
        "source      {} bytes, BLAKE3 {}",
        m.source_size, m.source_hash
    )?;
    writeln!(
        out,
        "target      {} bytes, BLAKE3 {}",
        m.target_size, m.target_hash
    )?;
    writeln!(out, "signature   (unverified) {}", clean(comment))?;
    writeln!(
        out,
        "manifest    {} bytes, payload {} bytes",
        manifest_len, m.payload_len
    )?;
    writeln!(
        out,
        "apply needs {} bytes of working memory (largest window {})",
        m.apply_memory(),
        m.max_window
    )?;
    match &m.transform {
        None => writeln!(out, "transform   none")?,
        Some(t) => {
            let s = TransformSummary::of(t);
            let mut label = "transform  ";
            if s.btf + s.versions > 0 || t.spaces.is_empty() {
                writeln!(
                    out,
                    "{label} {} BTF regions ({} with own maps), {} __versions regions; maps: {} type, {} string, {} CRC entries",
                    s.btf,
                    s.own,
                    s.versions,
                    t.types.entries().len(),
                    t.strings.entries().len(),
                    t.crcs.entries().len()
                )?;
                label = "           ";
            }
            if !t.spaces.is_empty() {
                writeln!(
                    out,
                    "{label} {} program code, {} relocation and {} pointer regions; {} address maps, {} entries",
                    s.code,
                    s.rela,
                    s.pointers,
                    t.spaces.len(),
                    s.addresses
                )?;
            }
        }
    }
    writeln!(out, "frames      {}", m.frames.len())?;
    for (kind, (n, out_len, payload)) in kinds {
        writeln!(
            out,
            "  {kind:<11} {n:>7} frames {out_len:>14} bytes out {payload:>12} bytes payload"
        )?;
    }
    Ok(())
}

/// Counts of a source transform's regions, by kind.
struct TransformSummary {
    btf: usize,
    own: usize,
    versions: usize,
    code: usize,
    rela: usize,
    pointers: usize,
    addresses: usize,
}

impl TransformSummary {
    fn of(t: &SourceTransform) -> Self {
        let mut s = Self {
            btf: 0,
            own: 0,
            versions: 0,
            code: 0,
            rela: 0,
            pointers: 0,
            addresses: t.spaces.iter().map(|m| m.entries().len()).sum(),
        };
        for (_, kind) in &t.regions {
            match kind {
                RegionKind::Btf { types, strings } => {
                    s.btf += 1;
                    if !types.entries().is_empty() || !strings.entries().is_empty() {
                        s.own += 1;
                    }
                }
                RegionKind::ModVersions => s.versions += 1,
                RegionKind::X86Code { .. } | RegionKind::Arm64Code { .. } => s.code += 1,
                RegionKind::Rela { .. } => s.rela += 1,
                RegionKind::Pointers { .. } => s.pointers += 1,
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_in_untrusted_text_are_removed() {
        let forged = "x\u{1b}[2K\rOK: signature verified\u{7}";
        let shown = clean(forged);
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.contains("x [2K OK"), "{shown:?}");
        assert!(!clean("a\u{202e}b\u{9b}c")
            .chars()
            .any(|c| c == '\u{202e}' || c.is_control()));
    }
}
