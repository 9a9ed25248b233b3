//! `deltaward demo`: the whole pipeline on built-in defaults. Makes a key pair and
//! a realistic pair of firmware images, diffs, applies, verifies, shows that a
//! tampered patch is refused, makes and checks a signed release with two bases, then
//! runs the delivery path on loopback: an origin, a site mirror, and two devices on
//! different base versions updating through it, with the bytes over the WAN and the
//! LAN and every device's checks.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use deltaward_engine::{
    generate_keypair, write_file, write_private_file, ApplyOptions, BuildOptions, FrameKind,
    KeyPairText, SecretKey,
};

use super::{apply::apply_file, diff::build_patch_file};
use crate::{args::thread_pool, synthetic};

/// Run the whole pipeline on built-in defaults: keys, images, diff, apply, verify, release.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Work directory (default: a temporary one, removed afterwards).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Size of the generated images, in MiB.
    #[arg(long, default_value = "64", value_name = "MIB", value_parser = crate::args::mib)]
    size: u64,
    /// Use these images instead of generated ones.
    #[arg(long, value_name = "OLD", requires = "new")]
    old: Option<PathBuf>,
    /// Use these images instead of generated ones.
    #[arg(long, value_name = "NEW", requires = "old")]
    new: Option<PathBuf>,
}

pub fn run(a: DemoArgs) -> Result<()> {
    let (old, new, size) = (a.old.as_deref(), a.new.as_deref(), a.size);
    let keep = a.dir.is_some();
    let tmp;
    let dir: PathBuf = match a.dir.as_deref() {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.to_path_buf()
        }
        None => {
            tmp = tempfile::tempdir().context("creating a work directory")?;
            tmp.path().to_path_buf()
        }
    };
    println!("deltaward demo in {}", dir.display());

    let kp = generate_keypair(None)?;
    let (sk_path, pk_path) = (dir.join("demo.key"), dir.join("demo.pub"));
    write_private_file(&sk_path, kp.secret.as_bytes())?;
    write_file(&pk_path, kp.public.as_bytes())?;
    println!(
        "1. key pair {} (minisign format): {}, {}",
        kp.key_id,
        sk_path.display(),
        pk_path.display()
    );

    let (old_path, new_path) = match (old, new) {
        (Some(o), Some(n)) => (o.to_path_buf(), n.to_path_buf()),
        _ => {
            let size = usize::try_from(size).context("image size")?;
            let (o, n) = synthetic::images(size);
            let (op, np) = (dir.join("firmware-2.0.img"), dir.join("firmware-2.1.img"));
            write_file(&op, &o)?;
            write_file(&np, &n)?;
            (op, np)
        }
    };
    let old_len = std::fs::metadata(&old_path)?.len();
    let new_len = std::fs::metadata(&new_path)?.len();
    println!(
        "2. images: old {} ({} bytes), new {} ({} bytes)",
        old_path.display(),
        old_len,
        new_path.display(),
        new_len
    );

    let key = SecretKey::from_text(&kp.secret, None)?;
    let patch_path = dir.join("update.dwp");
    let d = thread_pool(None)?.install(|| {
        build_patch_file(
            &old_path,
            &new_path,
            &patch_path,
            &key,
            &BuildOptions::default(),
            true,
        )
    })?;
    let kinds = |k: FrameKind| d.manifest.frames.iter().filter(|f| f.kind == k).count();
    println!(
        "3. diff: patch {} bytes = {:.2}% of the new image, {} frames (copy {}, zero {}, zstd {}, bsdiff {}), {:.2} s",
        d.patch_size,
        100.0 * d.patch_size as f64 / new_len.max(1) as f64,
        d.manifest.frames.len(),
        kinds(FrameKind::Copy),
        kinds(FrameKind::Zero),
        kinds(FrameKind::Zstd),
        kinds(FrameKind::Bsdiff) + kinds(FrameKind::BsdiffRuns),
        d.seconds
    );

    let trusted = crate::keys::trusted(&[&pk_path])?;
    let out_path = dir.join("firmware-2.1.rebuilt.img");
    let a = apply_file(
        &old_path,
        &patch_path,
        &out_path,
        &trusted,
        &ApplyOptions::default(),
        None,
    )?;
    println!(
        "4. apply: signature by {} verified, old image verified, {} frames verified, {} bytes written in {:.2} s (working memory bound {} bytes)",
        a.report.key_id,
        a.report.manifest.frames.len(),
        a.report.manifest.target_size,
        a.seconds,
        a.report.manifest.apply_memory()
    );
    let same = std::fs::read(&out_path)? == std::fs::read(&new_path)?;
    anyhow::ensure!(same, "the rebuilt image differs from the new image");
    println!("5. rebuilt image is byte-identical to the new image");

    // A man in the middle flips one byte of the patch: the device must refuse it.
    let mut tampered = std::fs::read(&patch_path)?;
    let mid = tampered.len() / 2;
    if let Some(b) = tampered.get_mut(mid) {
        *b ^= 0x01;
    }
    let bad_path = dir.join("tampered.dwp");
    write_file(&bad_path, &tampered)?;
    let bad_out = dir.join("must-not-exist.img");
    match apply_file(
        &old_path,
        &bad_path,
        &bad_out,
        &trusted,
        &ApplyOptions::default(),
        None,
    ) {
        Ok(_) => anyhow::bail!("a tampered patch was accepted"),
        Err(e) => {
            anyhow::ensure!(!bad_out.exists(), "a tampered patch left an output behind");
            println!(
                "6. tampered patch (one byte flipped at {mid}) refused: {:#}",
                e.root_cause()
            );
        }
    }
    let older_path = dir.join("firmware-1.9.img");
    older_version(&old_path, &older_path)?;
    release_demo(&dir, &kp, &key, &old_path, &older_path, &new_path)?;
    delivery_demo(&dir, keep, &old_path, &older_path, &new_path)?;
    println!("demo complete");
    Ok(())
}

/// Release notes of the demo release.
const DEMO_NOTES: &str = r#"hardware_ids = ["demo-pump-a1"]
expires_in = "180d"

[compatibility]
statement = "Firmware 2.1 for demo infusion pump A1 running firmware 2.0."
applies_from = ["2.0"]
hardware = ["Demo pump A1"]
requires = ["bootloader 3.2 or later"]
incompatible_with = ["docking station firmware before 1.4"]

[[security_fixes]]
id = "CVE-2026-12345"
severity = "high"
cvss_vector = "CVSS:3.1/AV:A/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
summary = "Authentication bypass in the service interface."

[support]
class = "supported"
end_of_support = "2031-12-31"

[approval]
approved = true

[installation]
instructions = "Instructions for use DP-A1, section 9: Software updates"
"#;

/// An older firmware, 1.9: the 2.0 image with a few KiB changed in every 8 MiB.
fn older_version(old: &Path, out: &Path) -> Result<()> {
    use std::io::{Read, Write};
    let mut src = std::fs::File::open(old).with_context(|| format!("opening {}", old.display()))?;
    let mut dst = deltaward_engine::AtomicFile::create(out)?;
    let mut buf = vec![0u8; 8 << 20];
    let mut n_block = 0u64;
    loop {
        let n = src
            .read(&mut buf)
            .with_context(|| format!("reading {}", old.display()))?;
        if n == 0 {
            break;
        }
        let chunk = buf.get_mut(..n).unwrap_or_default();
        for (i, b) in chunk.iter_mut().take(4096).enumerate() {
            *b = (*b).wrapping_add((i as u64 ^ n_block) as u8 | 1);
        }
        dst.write_all(chunk)?;
        n_block += 1;
    }
    dst.commit()?;
    Ok(())
}

/// Steps 7-9: a signed release with root, channel and notice, checked as a device.
fn release_demo(
    dir: &Path,
    kp: &KeyPairText,
    key: &SecretKey,
    old_path: &Path,
    older_path: &Path,
    new_path: &Path,
) -> Result<()> {
    use deltaward_release::{check, model, notice, repo};
    let repo_dir = dir.join("repo");
    let r = repo::Repo::new(&repo_dir);
    let root_kp = generate_keypair(None)?;
    let root_key = SecretKey::from_text(&root_kp.secret, None)?;
    let line = |t: &str| t.lines().nth(1).unwrap_or_default().to_owned();
    let role = |id: &str| model::Role {
        keyids: vec![id.to_owned()],
        threshold: 1,
    };
    let now = std::time::SystemTime::now();
    let root = model::Root {
        kind: "deltaward-root".into(),
        spec_version: model::SPEC_VERSION,
        version: 1,
        expires: repo::timestamp(now + std::time::Duration::from_secs(365 * 86_400)),
        keys: [
            (root_kp.key_id.clone(), line(&root_kp.public)),
            (kp.key_id.clone(), line(&kp.public)),
        ]
        .into_iter()
        .collect(),
        roles: model::Roles {
            root: role(&root_kp.key_id),
            release: role(&kp.key_id),
            channel: role(&kp.key_id),
        },
    };
    repo::write_root(&r, &root, &[&root_key])?;
    let req = repo::ReleaseRequest {
        product: "demo-pump".into(),
        version: "2.1".into(),
        counter: 1,
        image: new_path.to_path_buf(),
        bases: vec![
            repo::BaseImage {
                version: "2.0".into(),
                path: old_path.to_path_buf(),
            },
            repo::BaseImage {
                version: "1.9".into(),
                path: older_path.to_path_buf(),
            },
        ],
        patches: Vec::new(),
        notes: repo::parse_notes(DEMO_NOTES)?,
        build: BuildOptions::default(),
        memory_limit: 4 << 30,
        channel_validity: repo::CHANNEL_VALIDITY,
        now,
    };
    let t = std::time::Instant::now();
    let release = thread_pool(None)?.install(|| repo::build_release(&r, &req, &[key], &[key]))?;
    println!(
        "7. release demo-pump 2.1 (counter 1) in {}: patches from {}, full image {} bytes, release.json and channel.json signed, {:.2} s",
        repo_dir.display(),
        release
            .bases
            .iter()
            .map(|b| format!("{} ({} bytes)", b.version, b.patch.length))
            .collect::<Vec<_>>()
            .join(" and "),
        release.full_image.object.length,
        t.elapsed().as_secs_f64()
    );
    let state = check::StateDir::new(&dir.join("device-state"));
    state.init(&std::fs::read(repo_dir.join("root.json"))?)?;
    let device = check::Device::from_image("demo-pump-a1", "2.0", old_path)?;
    let c = check::check_release(&r, "demo-pump", &state, &device, now)?;
    let plan = match &c.plan {
        check::Plan::Patch(b) => format!("apply the patch from {}", b.version),
        check::Plan::Full => "install the full image".into(),
        check::Plan::UpToDate => "nothing to do".into(),
    };
    println!("8. device check: root, channel and release signatures, expiry, counter, hardware and base verified; plan: {plan}");
    println!("9. the update notice operators read:\n");
    print!("{}", notice::render(&release, notice::Format::Text));
    println!();
    Ok(())
}

/// Steps 10-15: the delivery path on loopback. An origin serves the repository, a
/// site mirror (with a WAN cap) relays it, and three devices on 2.0, 1.9 and 2.0
/// update through the mirror with `deltaward update`'s client, reporting their
/// deliveries; the second 2.0 device's patch comes from the mirror's cache.
fn delivery_demo(
    dir: &Path,
    keep: bool,
    old_path: &Path,
    older_path: &Path,
    new_path: &Path,
) -> Result<()> {
    use deltaward_mirror::{
        report::Outcome,
        update::{update, Request},
        AccessLog, Config, Metrics, Mirror, Mode, Origin, Server, Service,
    };
    use std::sync::Arc;
    let rt = crate::commands::mirror::runtime()?;
    rt.block_on(async {
        let repo_dir = dir.join("repo");
        let mut origin_cfg = Config::default();
        origin_cfg.listen = Some("127.0.0.1:0".into());
        let wan = Arc::new(Metrics::default());
        let origin = Arc::new(Service::new(
            Mode::Origin(Origin::new(&repo_dir)?),
            &origin_cfg.limits,
            AccessLog::new(None)?,
            wan.clone(),
        ));
        let origin_server = Server::bind(&origin_cfg, origin).await?;
        let origin_url = origin_server.url().to_owned();
        tokio::spawn(origin_server.run(std::future::pending()));

        let mut mirror_cfg = Config::default();
        mirror_cfg.listen = Some("127.0.0.1:0".into());
        mirror_cfg.upstream = Some(origin_url.clone());
        mirror_cfg.cache = Some(dir.join("mirror-cache"));
        mirror_cfg.trust = Some(repo_dir.join("root.json"));
        mirror_cfg.upstream_rate = Some(64 << 20);
        let lan = Arc::new(Metrics::default());
        // The mirror's own key: it signs the delivery log's checkpoints, never releases.
        let mirror_kp = generate_keypair(None)?;
        let mirror_key = dir.join("mirror.key");
        write_private_file(&mirror_key, mirror_kp.secret.as_bytes())?;
        mirror_cfg.log_dir = Some(dir.join("mirror-log"));
        mirror_cfg.log_key = Some(mirror_key);
        let mirror = Arc::new(Mirror::open(&mirror_cfg, lan.clone())?);
        let site = Arc::new(Service::new(
            Mode::Mirror(mirror.clone()),
            &mirror_cfg.limits,
            AccessLog::new(None)?,
            lan.clone(),
        ));
        let mirror_server = Server::bind(&mirror_cfg, site).await?;
        let mirror_url = mirror_server.url().to_owned();
        tokio::spawn(mirror_server.run(std::future::pending()));
        println!(
            "10. origin {origin_url} serves the repository; site mirror {mirror_url} (cache {}, WAN capped at 64 MiB/s) verifies and relays it",
            dir.join("mirror-cache").display()
        );

        for (n, (name, version, image)) in [
            ("pump-ward-3", "2.0", old_path),
            ("pump-icu-1", "1.9", older_path),
            ("pump-ward-4", "2.0", old_path),
        ]
        .into_iter()
        .enumerate()
        {
            let ddir = dir.join(name);
            let state = deltaward_release::check::StateDir::new(&ddir.join("state"));
            std::fs::create_dir_all(&ddir)?;
            state.init(&std::fs::read(repo_dir.join("root.json"))?)?;
            let mut req = Request::new(
                vec![mirror_url.clone()],
                "demo-pump",
                "demo-pump-a1",
                image,
                &ddir.join("firmware.img"),
                state.dir(),
            );
            req.current_version = Some(version.into());
            req.device_id = name.into();
            req.exit_code = Some(crate::exit::code_of);
            let (report, result) = update(&req, &|_| {}).await;
            result.with_context(|| format!("updating {name}"))?;
            anyhow::ensure!(report.outcome == Outcome::Installed, "{name}: {:?}", report.outcome);
            let same = std::fs::read(&req.output)? == std::fs::read(new_path)?;
            anyhow::ensure!(same, "{name}: the new image differs");
            let object = report.object.as_ref().map_or(String::new(), |o| {
                format!("{} from {} ({} bytes)", o.kind.replace('_', " "), o.base_version.as_deref().unwrap_or("-"), o.length)
            });
            println!(
                "{}. device {name} on {version}: installed 2.1 with the {object}, {} bytes over the LAN, {:.2} s, report delivered to the mirror{}",
                11 + n,
                report.bytes_downloaded,
                report.durations_ms.total as f64 / 1000.0,
                if n == 0 { "; its checks:" } else { "" }
            );
            if n == 0 {
                for c in &report.checks {
                    println!("      {} {}: {}", c.result, c.check, c.detail);
                }
            }
        }
        println!(
            "14. bytes over the WAN (origin to mirror): {}; over the LAN (mirror to devices): {}; objects served from the mirror's cache: {}; delivery reports stored by the mirror: {}",
            wan.bytes_served.get(),
            lan.bytes_served.get(),
            lan.cache_hits.get(),
            lan.reports.get()
        );

        // What the operator and the auditor get.
        let pages = deltaward_mirror::upstream::Upstream::new(
            deltaward_mirror::upstream::Location::Http(mirror_url.clone()),
            None,
            None,
            &mirror_cfg.limits,
            Arc::default(),
        )?;
        let page = pages.get_small("", 4 << 20, None).await?;
        let page_path = dir.join("operator-page.html");
        write_file(&page_path, &page.body)?;
        if let Some(log) = &mirror.log {
            log.close()?;
        }
        let mut keys = deltaward_engine::TrustedKeys::new();
        keys.add_text(&mirror_kp.public)?;
        let log_files = deltaward_mirror::log::files(&dir.join("mirror-log"))?;
        let repo = deltaward_release::repo::Repo::new(&repo_dir);
        let products = ["demo-pump".to_owned()];
        let report = tokio::task::spawn_blocking(move || {
            deltaward_mirror::audit::build(&log_files, &keys, &repo, &products)
        })
        .await??
        .map_err(crate::exit::Tampered)?;
        let audit_path = dir.join("audit-report.html");
        write_file(&audit_path, deltaward_mirror::audit::to_html(&report).as_bytes())?;
        println!(
            "15. delivery log {} verified ({} records, {} signed checkpoints); audit report {}; operator page {} (served live at {mirror_url}/, with /feed.atom and /v1/notices.json){}",
            dir.join("mirror-log").display(),
            report.log.records,
            report.log.checkpoints,
            audit_path.display(),
            page_path.display(),
            if keep { "" } else { "; run with --dir DIR to keep these files" }
        );
        anyhow::Ok(())
    })
}
