//! The delivery report a device sends after every update attempt (installed, up to
//! date, refused or failed), and the mirror stores: the delivery record of IEC
//! 81001-5-1 6.3.3. Its schema is `docs/report.schema.json`; `docs/REPORTS.md`
//! describes each field.

use serde::{Deserialize, Serialize};

/// `_type` of a report.
pub const REPORT_TYPE: &str = "deltaward-delivery-report";

/// Largest report the mirror accepts.
pub const REPORT_MAX_BYTES: usize = 64 << 10;

/// One update attempt, as reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Report {
    /// Always [`REPORT_TYPE`].
    #[serde(rename = "_type")]
    pub kind: String,
    /// 1.
    pub spec_version: u32,
    /// The device (`--device-id`, default the host name).
    pub device_id: String,
    /// Product.
    pub product: String,
    /// Hardware id.
    pub hardware_id: String,
    /// When the attempt started (RFC 3339).
    pub started: String,
    /// When it ended (RFC 3339).
    pub finished: String,
    /// The image the device ran.
    pub from: Image,
    /// The release offered, once verified.
    pub to: Option<Image>,
    /// The object downloaded, if any.
    pub object: Option<ObjectUsed>,
    /// The mirror that answered.
    pub mirror: Option<String>,
    /// Version of the trusted root after the check.
    pub root_version: Option<u64>,
    /// Ids of the keys whose signatures verified, by document.
    pub key_ids: KeyIds,
    /// Every check made, in order, with its result.
    pub checks: Vec<Check>,
    /// Bytes downloaded in this attempt (documents and object).
    pub bytes_downloaded: u64,
    /// Time spent per phase, in milliseconds.
    pub durations_ms: Durations,
    /// `installed`, `up_to_date`, `waiting_for_approval`, `refused` or `failed`.
    pub outcome: Outcome,
    /// Why it was refused or failed.
    pub reason: Option<String>,
    /// The exit code `deltaward update` gave.
    pub exit_code: u8,
}

/// An image: version (when known), length, BLAKE3.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    /// Version, when known.
    pub version: Option<String>,
    /// Release counter (for a release).
    pub counter: Option<u64>,
    /// Length in bytes.
    pub length: u64,
    /// BLAKE3, hex.
    pub blake3: String,
}

/// The object an update used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectUsed {
    /// `patch` or `full_image`.
    pub kind: String,
    /// For a patch, the base version.
    pub base_version: Option<String>,
    /// BLAKE3, hex (its name).
    pub blake3: String,
    /// Length in bytes.
    pub length: u64,
}

/// Key ids whose signatures were verified.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyIds {
    /// On `channel.json`.
    pub channel: Vec<String>,
    /// On `release.json`.
    pub release: Vec<String>,
    /// On the patch's manifest.
    pub patch: Option<String>,
}

/// One check and its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// What was checked.
    pub check: String,
    /// `passed` or `failed`.
    pub result: String,
    /// What was found.
    pub detail: String,
}

impl Check {
    /// A passed check.
    pub fn passed(check: &str, detail: impl Into<String>) -> Self {
        Self {
            check: check.to_owned(),
            result: "passed".to_owned(),
            detail: detail.into(),
        }
    }

    /// A failed check.
    pub fn failed(check: &str, detail: impl Into<String>) -> Self {
        Self {
            check: check.to_owned(),
            result: "failed".to_owned(),
            detail: detail.into(),
        }
    }
}

/// Milliseconds per phase.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Durations {
    /// Hashing the current image.
    pub hash: u64,
    /// Fetching and verifying the documents.
    pub check: u64,
    /// Downloading the object.
    pub download: u64,
    /// Applying the patch or writing the full image.
    pub apply: u64,
    /// The whole attempt.
    pub total: u64,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The new image was written and verified.
    Installed,
    /// The device already runs the newest release.
    UpToDate,
    /// The site has not approved the newest release yet: nothing installed.
    WaitingForApproval,
    /// A check refused the update.
    Refused,
    /// Something else went wrong (no mirror, disk, corrupt patch).
    #[default]
    Failed,
}

impl Report {
    /// The version the device runs after this attempt, when known.
    pub fn runs_version(&self) -> Option<&str> {
        let to = self.to.as_ref().and_then(|t| t.version.as_deref());
        match self.outcome {
            Outcome::Installed | Outcome::UpToDate => to.or(self.from.version.as_deref()),
            Outcome::WaitingForApproval | Outcome::Refused | Outcome::Failed => {
                self.from.version.as_deref()
            }
        }
    }

    /// BLAKE3 (hex) of the image the device runs after this attempt.
    pub fn runs_image(&self) -> &str {
        match (self.outcome, &self.to) {
            (Outcome::Installed | Outcome::UpToDate, Some(t)) => &t.blake3,
            _ => &self.from.blake3,
        }
    }

    /// Orders reports of one device by when they ended.
    fn finished_key(&self) -> (Option<std::time::SystemTime>, &str) {
        (
            humantime::parse_rfc3339_weak(&self.finished).ok(),
            &self.finished,
        )
    }
}

/// One device's reports, as the mirror holds them.
#[derive(Debug, Clone)]
pub struct DeviceReports {
    /// Its latest report (by `finished`).
    pub latest: Report,
    /// Reports it sent.
    pub reports: usize,
}

/// Each device's latest report, by device id.
pub fn latest_by_device(reports: impl IntoIterator<Item = Report>) -> Vec<DeviceReports> {
    let mut by_id: std::collections::BTreeMap<String, DeviceReports> = Default::default();
    for r in reports {
        match by_id.get_mut(&r.device_id) {
            Some(d) => {
                d.reports += 1;
                if r.finished_key() > d.latest.finished_key() {
                    d.latest = r;
                }
            }
            None => {
                by_id.insert(
                    r.device_id.clone(),
                    DeviceReports {
                        latest: r,
                        reports: 1,
                    },
                );
            }
        }
    }
    by_id.into_values().collect()
}

/// The reports stored in `dir` (the mirror's `CACHE/reports`): each device's latest,
/// the number of report files read, and of those that were not reports.
pub fn read_stored(dir: &std::path::Path) -> (Vec<DeviceReports>, usize, usize) {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return (Vec::new(), 0, 0);
    };
    let (mut read, mut bad) = (0, 0);
    let mut reports = Vec::new();
    for e in listing.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        read += 1;
        match crate::config::read_capped(&e.path(), REPORT_MAX_BYTES as u64) {
            Ok(Some(b)) => match parse(&b) {
                Ok(r) => reports.push(r),
                Err(_) => bad += 1,
            },
            _ => bad += 1,
        }
    }
    (latest_by_device(reports), read, bad)
}

/// Checks that `bytes` is a report the mirror may store: JSON of this schema.
pub fn parse(bytes: &[u8]) -> Result<Report, String> {
    if bytes.len() > REPORT_MAX_BYTES {
        return Err(format!("a report is at most {REPORT_MAX_BYTES} bytes"));
    }
    let r: Report = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if r.kind != REPORT_TYPE || r.spec_version != 1 {
        return Err(format!("_type must be {REPORT_TYPE} and spec_version 1"));
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/report.schema.json names every field a report has, and no other.
    #[test]
    fn the_schema_is_current() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/report.schema.json")).expect("schema");
        let mut required: Vec<&str> = schema["required"]
            .as_array()
            .expect("required")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let report = serde_json::to_value(Report::default()).expect("report");
        let mut fields: Vec<&str> = report
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        required.sort_unstable();
        fields.sort_unstable();
        assert_eq!(required, fields);
        for (def, value) in [
            ("key_ids", serde_json::to_value(KeyIds::default())),
            ("durations_ms", serde_json::to_value(Durations::default())),
        ] {
            let mut want: Vec<String> = schema["properties"][def]["required"]
                .as_array()
                .expect("required")
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            let mut have: Vec<String> = value
                .expect("value")
                .as_object()
                .expect("object")
                .keys()
                .cloned()
                .collect();
            want.sort();
            have.sort();
            assert_eq!(want, have, "{def}");
        }
    }

    #[test]
    fn only_reports_are_accepted() {
        let good = serde_json::to_vec(&Report {
            kind: REPORT_TYPE.into(),
            spec_version: 1,
            ..Report::default()
        })
        .expect("json");
        assert!(parse(&good).is_ok());
        assert!(parse(b"{}").is_err());
        assert!(parse(&serde_json::to_vec(&Report::default()).expect("json")).is_err());
        let mut big = good.clone();
        big.resize(REPORT_MAX_BYTES + 1, b' ');
        assert!(parse(&big).is_err());
    }
}
