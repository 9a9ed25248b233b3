//! `deltaward audit report`: what the site's delivery log shows, per release and per
//! device, with the evidence: each release as its signed `release.json` states it
//! (compatibility, security fixes, the maker's approval), the site's approval, which
//! devices received and installed it with the checks their reports listed and the key
//! ids that signed, and which devices have not updated and what they run.
//!
//! The log is verified first (chain and checkpoints); a log that does not verify gives
//! no report. Device reports are read from the log's `report` records, which hold each
//! report whole, so the log alone is the evidence. Releases are read from the
//! repository (a directory or a URL) and verified under its own root as of their issue
//! time. The JSON form is documented in `docs/AUDIT.md`.

use std::{
    collections::{BTreeMap, HashSet},
    io::Read,
    path::PathBuf,
};

use deltaward_engine::TrustedKeys;
use deltaward_release::{
    check::releases_of,
    model::{Approval as MakerApproval, Compatibility, SecurityFix, Support},
    notice::{html_text, severity, support},
    source::Source,
};
use serde::Serialize;

use crate::{
    approval::Approval,
    error::{Error, Result},
    log::{verify, Record, Tamper, Verified},
    report::{Check, KeyIds, ObjectUsed, Outcome, Report},
};

/// The audit report.
#[derive(Debug, Clone, Serialize)]
pub struct AuditReport {
    /// When it was made (RFC 3339).
    pub generated: String,
    /// What the log's verification found.
    pub log: Verified,
    /// Version of the repository's root the releases were verified under.
    pub root_version: u64,
    /// Each product, its releases.
    pub products: Vec<ProductAudit>,
    /// Each device's latest state.
    pub devices: Vec<DeviceStatus>,
}

/// One product.
#[derive(Debug, Clone, Serialize)]
pub struct ProductAudit {
    /// Product.
    pub product: String,
    /// Its releases, newest first.
    pub releases: Vec<ReleaseAudit>,
}

/// One release and its deliveries.
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseAudit {
    /// Version.
    pub version: String,
    /// Counter.
    pub counter: u64,
    /// Issue time.
    pub issued: String,
    /// Expiry.
    pub expires: String,
    /// Key ids whose signatures on release.json verified.
    pub signed_by: Vec<String>,
    /// BLAKE3 of the image it installs.
    pub target_blake3: String,
    /// The compatibility statement.
    pub compatibility: Compatibility,
    /// Security fixes.
    pub security_fixes: Vec<SecurityFix>,
    /// Support class and end of support.
    pub support: Support,
    /// The maker's approval (and mitigations).
    pub maker_approval: MakerApproval,
    /// The site's approval, if the log records one.
    pub site_approval: Option<Approval>,
    /// Deliveries of its objects by the mirror (from `serve` records).
    pub served: Vec<Served>,
    /// Devices that downloaded one of its objects.
    pub received: Vec<DeviceEvidence>,
    /// Devices that installed it.
    pub installed: Vec<DeviceEvidence>,
}

/// One object delivery.
#[derive(Debug, Clone, Serialize)]
pub struct Served {
    /// When.
    pub time: String,
    /// Client address.
    pub client: String,
    /// Client certificate identity (mutual TLS).
    pub user: Option<String>,
    /// The object (BLAKE3 hex).
    pub object: String,
    /// `Range` asked for.
    pub range: Option<String>,
    /// Bytes sent.
    pub bytes: u64,
    /// Whether the body was sent whole.
    pub complete: bool,
}

/// A device's report about a release: its verification evidence.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceEvidence {
    /// Device id.
    pub device_id: String,
    /// Hardware id.
    pub hardware_id: String,
    /// When the attempt ended.
    pub time: String,
    /// Outcome.
    pub outcome: Outcome,
    /// Version it ran.
    pub from_version: Option<String>,
    /// The object it used.
    pub object: Option<ObjectUsed>,
    /// Key ids whose signatures it verified.
    pub key_ids: KeyIds,
    /// The checks its report listed.
    pub checks: Vec<Check>,
}

/// A device's latest state.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    /// Device id.
    pub device_id: String,
    /// Product.
    pub product: String,
    /// Hardware id.
    pub hardware_id: String,
    /// The version it runs, as its last report shows (unknown when it never said).
    pub runs: Option<String>,
    /// The newest release of its product.
    pub newest: Option<String>,
    /// Whether it runs the newest release.
    pub up_to_date: bool,
    /// Its last outcome.
    pub last_outcome: Outcome,
    /// When.
    pub last_time: String,
    /// Why, when refused or failed.
    pub reason: Option<String>,
}

fn records(files: &[PathBuf]) -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for f in files {
        let mut bytes = Vec::new();
        std::fs::File::open(f)
            .and_then(|mut h| h.read_to_end(&mut bytes))
            .map_err(|source| Error::Io {
                action: "reading",
                path: f.clone(),
                source,
            })?;
        // Torn lines (sealed, or the verification would have failed) are not records.
        out.extend(
            bytes
                .split(|&b| b == b'\n')
                .filter_map(|l| serde_json::from_slice::<Record>(l).ok()),
        );
    }
    Ok(out)
}

/// Builds the report from the log `files` (verified under `keys`) and the
/// releases of `products` (or of every product the reports name) from `src`.
pub fn build(
    files: &[PathBuf],
    keys: &TrustedKeys,
    src: &dyn Source,
    products: &[String],
) -> Result<std::result::Result<AuditReport, Tamper>> {
    let log = match verify(files, keys)? {
        Ok(v) => v,
        Err(t) => return Ok(Err(t)),
    };
    let recs = records(files)?;
    let reports: Vec<Report> = recs
        .iter()
        .filter(|r| r.kind == "report")
        .filter_map(|r| serde_json::from_value(r.data["report"].clone()).ok())
        .collect();
    let approvals: Vec<Approval> = recs
        .iter()
        .filter(|r| r.kind == "approval")
        .filter_map(|r| serde_json::from_value(r.data.clone()).ok())
        .collect();
    let served: Vec<Served> = recs
        .iter()
        .filter(|r| r.kind == "serve")
        .map(|r| Served {
            time: r.time.clone(),
            client: r.data["client"].as_str().unwrap_or_default().to_owned(),
            user: r.data["user"].as_str().map(str::to_owned),
            object: r.data["object"].as_str().unwrap_or_default().to_owned(),
            range: r.data["range"].as_str().map(str::to_owned),
            bytes: r.data["bytes"].as_u64().unwrap_or(0),
            complete: r.data["complete"].as_bool().unwrap_or(false),
        })
        .collect();
    let wanted: Vec<String> = if products.is_empty() {
        let set: std::collections::BTreeSet<String> =
            reports.iter().map(|r| r.product.clone()).collect();
        set.into_iter().collect()
    } else {
        products.to_vec()
    };
    let evidence = |r: &Report| DeviceEvidence {
        device_id: r.device_id.clone(),
        hardware_id: r.hardware_id.clone(),
        time: r.finished.clone(),
        outcome: r.outcome,
        from_version: r.from.version.clone(),
        object: r.object.clone(),
        key_ids: r.key_ids.clone(),
        checks: r.checks.clone(),
    };
    let mut root_version = 0;
    let mut out_products = Vec::new();
    let mut newest: BTreeMap<String, String> = BTreeMap::new();
    for p in &wanted {
        let (root, releases) = releases_of(src, p)?;
        root_version = root.version;
        let mut audits = Vec::new();
        for (r, signers) in releases {
            let objects: HashSet<String> = r
                .bases
                .iter()
                .map(|b| b.patch.blake3.to_string())
                .chain([r.full_image.object.blake3.to_string()])
                .collect();
            let of_product = || reports.iter().filter(|x| &x.product == p);
            audits.push(ReleaseAudit {
                version: r.version.clone(),
                counter: r.counter,
                issued: r.issued.clone(),
                expires: r.expires.clone(),
                signed_by: signers,
                target_blake3: r.target.blake3.to_string(),
                compatibility: r.compatibility.clone(),
                security_fixes: r.security_fixes.clone(),
                support: r.support.clone(),
                maker_approval: r.approval.clone(),
                site_approval: approvals
                    .iter()
                    .rev()
                    .find(|a| &a.product == p && a.version == r.version)
                    .cloned(),
                served: served
                    .iter()
                    .filter(|s| objects.contains(&s.object))
                    .cloned()
                    .collect(),
                received: of_product()
                    .filter(|x| {
                        x.object
                            .as_ref()
                            .is_some_and(|o| objects.contains(&o.blake3))
                    })
                    .map(evidence)
                    .collect(),
                installed: of_product()
                    .filter(|x| {
                        x.outcome == Outcome::Installed
                            && x.to.as_ref().and_then(|t| t.version.as_deref())
                                == Some(r.version.as_str())
                    })
                    .map(evidence)
                    .collect(),
            });
        }
        audits.sort_by_key(|a| std::cmp::Reverse(a.counter));
        if let Some(n) = audits.first() {
            newest.insert(p.clone(), n.version.clone());
        }
        out_products.push(ProductAudit {
            product: p.clone(),
            releases: audits,
        });
    }
    let latest = crate::report::latest_by_device(reports.iter().cloned());
    let devices = latest
        .iter()
        .map(|d| &d.latest)
        .filter(|r| wanted.contains(&r.product))
        .map(|r| {
            let runs = r.runs_version().map(str::to_owned);
            let newest = newest.get(&r.product).cloned();
            DeviceStatus {
                device_id: r.device_id.clone(),
                product: r.product.clone(),
                hardware_id: r.hardware_id.clone(),
                up_to_date: runs.is_some() && runs == newest,
                runs,
                newest,
                last_outcome: r.outcome,
                last_time: r.finished.clone(),
                reason: r.reason.clone(),
            }
        })
        .collect();
    Ok(Ok(AuditReport {
        generated: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        log,
        root_version,
        products: out_products,
        devices,
    }))
}

fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Installed => "installed",
        Outcome::UpToDate => "up to date",
        Outcome::WaitingForApproval => "waiting for site approval",
        Outcome::Refused => "refused",
        Outcome::Failed => "failed",
    }
}

/// The report as CSV: one row per release and device that received or installed it,
/// then one row per device that is not up to date.
pub fn to_csv(r: &AuditReport) -> Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let row = |w: &mut csv::Writer<Vec<u8>>, fields: &[String]| -> Result<()> {
        w.write_record(fields)
            .map_err(|e| Error::Report(e.to_string()))
    };
    row(
        &mut w,
        &[
            "section",
            "product",
            "version",
            "counter",
            "site_approved_by",
            "device_id",
            "hardware_id",
            "outcome",
            "time",
            "from_version",
            "object_kind",
            "object_blake3",
            "channel_key_ids",
            "release_key_ids",
            "patch_key_id",
            "checks_passed",
            "checks_failed",
        ]
        .map(str::to_owned),
    )?;
    for p in &r.products {
        for rel in &p.releases {
            let approved = rel
                .site_approval
                .as_ref()
                .map_or(String::new(), |a| a.by.clone());
            for (section, list) in [("received", &rel.received), ("installed", &rel.installed)] {
                for d in list {
                    let passed = d.checks.iter().filter(|c| c.result == "passed").count();
                    row(
                        &mut w,
                        &[
                            section.to_owned(),
                            p.product.clone(),
                            rel.version.clone(),
                            rel.counter.to_string(),
                            approved.clone(),
                            d.device_id.clone(),
                            d.hardware_id.clone(),
                            outcome_name(d.outcome).to_owned(),
                            d.time.clone(),
                            d.from_version.clone().unwrap_or_default(),
                            d.object.as_ref().map_or(String::new(), |o| o.kind.clone()),
                            d.object
                                .as_ref()
                                .map_or(String::new(), |o| o.blake3.clone()),
                            d.key_ids.channel.join(" "),
                            d.key_ids.release.join(" "),
                            d.key_ids.patch.clone().unwrap_or_default(),
                            passed.to_string(),
                            (d.checks.len() - passed).to_string(),
                        ],
                    )?;
                }
            }
        }
    }
    for d in r.devices.iter().filter(|d| !d.up_to_date) {
        row(
            &mut w,
            &[
                "not_updated".to_owned(),
                d.product.clone(),
                d.runs.clone().unwrap_or_default(),
                String::new(),
                String::new(),
                d.device_id.clone(),
                d.hardware_id.clone(),
                outcome_name(d.last_outcome).to_owned(),
                d.last_time.clone(),
                d.runs.clone().unwrap_or_default(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                d.reason.clone().unwrap_or_default(),
            ],
        )?;
    }
    let bytes = w.into_inner().map_err(|e| Error::Report(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| Error::Report(e.to_string()))
}

fn h(s: &str) -> String {
    html_text(s)
}

/// The report as one self-contained HTML page that prints on A4.
pub fn to_html(r: &AuditReport) -> String {
    let mut o = String::new();
    o.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Update delivery audit report</title>\n<style>\n@page { size: A4; margin: 15mm; }\nbody { font: 10pt/1.4 sans-serif; color: #000; max-width: 180mm; margin: auto; }\nh1 { font-size: 16pt; } h2 { font-size: 13pt; border-bottom: 1px solid #444; } h3 { font-size: 11pt; }\ntable { border-collapse: collapse; width: 100%; margin: 4pt 0 10pt; page-break-inside: auto; }\nth, td { border: 1px solid #888; padding: 2pt 4pt; text-align: left; vertical-align: top; overflow-wrap: anywhere; }\ntd.evidence { width: 60%; }\nth { background: #eee; } tr { page-break-inside: avoid; }\n.bad { color: #a00; font-weight: bold; } .ok { color: #060; }\ncode { font-size: 8pt; }\n</style></head><body>\n");
    o.push_str("<h1>Update delivery audit report</h1>\n");
    o.push_str(&format!(
        "<p>Generated {}. Delivery log verified: {} records (seq {} to {}) in {} file(s), {} checkpoint(s) signed by mirror key <code>{}</code>, {} torn record(s) sealed. Releases verified under repository root version {}.</p>\n",
        h(&r.generated), r.log.records, r.log.first_seq, r.log.last_seq, r.log.files,
        r.log.checkpoints, h(&r.log.key_id), r.log.sealed, r.root_version
    ));
    for p in &r.products {
        o.push_str(&format!("<h2>Product {}</h2>\n", h(&p.product)));
        for rel in &p.releases {
            o.push_str(&format!(
                "<h3>Release {} (counter {})</h3>\n<table><tbody>\n",
                h(&rel.version),
                rel.counter
            ));
            let row = |o: &mut String, k: &str, v: String| {
                o.push_str(&format!(
                    "<tr><th scope=\"row\">{k}</th><td>{v}</td></tr>\n"
                ));
            };
            row(
                &mut o,
                "Issued / expires",
                format!("{} / {}", h(&rel.issued), h(&rel.expires)),
            );
            row(
                &mut o,
                "Signed by (release keys)",
                h(&rel.signed_by.join(", ")),
            );
            row(
                &mut o,
                "Image BLAKE3",
                format!("<code>{}</code>", h(&rel.target_blake3)),
            );
            row(&mut o, "Compatibility", h(&rel.compatibility.statement));
            let fixes = rel
                .security_fixes
                .iter()
                .map(|f| format!("{} ({}): {}", f.id, severity(f.severity), f.summary))
                .collect::<Vec<_>>()
                .join("; ");
            row(
                &mut o,
                "Security fixes",
                h(if fixes.is_empty() { "none" } else { &fixes }),
            );
            row(
                &mut o,
                "Support",
                h(&format!(
                    "{}, end of support {}",
                    support(rel.support.class),
                    rel.support.end_of_support
                )),
            );
            row(
                &mut o,
                "Manufacturer approval",
                if rel.maker_approval.approved {
                    "<span class=\"ok\">approved</span>".to_owned()
                } else {
                    format!(
                        "<span class=\"bad\">not approved</span>; mitigations: {}",
                        h(&rel.maker_approval.mitigations.join("; "))
                    )
                },
            );
            row(
                &mut o,
                "Site approval",
                match &rel.site_approval {
                    Some(a) => h(&format!(
                        "approved by {} at {}{}{}",
                        a.by,
                        a.time,
                        a.note.as_ref().map_or(String::new(), |n| format!(" ({n})")),
                        if a.accept_mitigations {
                            "; mitigations accepted"
                        } else {
                            ""
                        }
                    )),
                    None => "none recorded".to_owned(),
                },
            );
            row(
                &mut o,
                "Deliveries by the mirror",
                h(&format!(
                    "{} response(s), {} complete, {} bytes",
                    rel.served.len(),
                    rel.served.iter().filter(|s| s.complete).count(),
                    rel.served.iter().map(|s| s.bytes).sum::<u64>()
                )),
            );
            o.push_str("</tbody></table>\n");
            for (title, list) in [("Received", &rel.received), ("Installed", &rel.installed)] {
                o.push_str(&format!(
                    "<table><caption>{title} by {} device(s)</caption><thead><tr><th scope=\"col\">Device</th><th scope=\"col\">Hardware</th><th scope=\"col\">Outcome</th><th scope=\"col\">Time</th><th scope=\"col\">From</th><th scope=\"col\">Verification evidence</th></tr></thead><tbody>\n",
                    list.len()
                ));
                for d in list.iter() {
                    // One line per check, each escaped on its own.
                    let checks = d
                        .checks
                        .iter()
                        .map(|c| h(&format!("{} {}: {}", c.result, c.check, c.detail)))
                        .collect::<Vec<_>>()
                        .join("<br>");
                    o.push_str(&format!(
                        "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"evidence\">keys: channel {}, release {}, patch {}<br>{}</td></tr>\n",
                        h(&d.device_id),
                        h(&d.hardware_id),
                        outcome_name(d.outcome),
                        h(&d.time),
                        h(d.from_version.as_deref().unwrap_or("unknown")),
                        h(&d.key_ids.channel.join(" ")),
                        h(&d.key_ids.release.join(" ")),
                        h(d.key_ids.patch.as_deref().unwrap_or("-")),
                        checks
                    ));
                }
                o.push_str("</tbody></table>\n");
            }
        }
    }
    o.push_str("<h2>Devices</h2>\n<table><thead><tr><th scope=\"col\">Device</th><th scope=\"col\">Product</th><th scope=\"col\">Runs</th><th scope=\"col\">Newest</th><th scope=\"col\">Status</th><th scope=\"col\">Last report</th></tr></thead><tbody>\n");
    for d in &r.devices {
        o.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} at {}{}</td></tr>\n",
            h(&d.device_id),
            h(&d.product),
            h(d.runs.as_deref().unwrap_or("unknown")),
            h(d.newest.as_deref().unwrap_or("-")),
            if d.up_to_date {
                "<span class=\"ok\">up to date</span>"
            } else {
                "<span class=\"bad\">not updated</span>"
            },
            outcome_name(d.last_outcome),
            h(&d.last_time),
            d.reason
                .as_ref()
                .map_or(String::new(), |r| format!(": {}", h(r)))
        ));
    }
    o.push_str("</tbody></table>\n</body></html>\n");
    o
}
