//! S3-compatible object storage (AWS S3, Ceph RGW, MinIO, Garage) as a repository:
//! the bucket's address, credentials taken the way the AWS CLI takes them, and
//! signed request URLs.
//!
//! Signing (SigV4, in the query string) is done by `rusty-s3`, which does no I/O:
//! every request goes through the mirror's own hyper client, so that an S3 upstream
//! gets the same timeouts, retries, Range resume and bandwidth cap as an HTTP one.
//!
//! - **Credentials:** `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
//!   `AWS_SESSION_TOKEN` from the environment (never from a settings file). Without
//!   them, requests go unsigned (a public bucket).
//! - **Endpoint:** `--endpoint`, else `AWS_ENDPOINT_URL_S3`, else
//!   `AWS_ENDPOINT_URL`, else AWS's `https://s3.REGION.amazonaws.com`.
//! - **Region:** `--region`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`, else
//!   `us-east-1`.
//! - **Addressing:** path-style (`ENDPOINT/BUCKET/KEY`) for any endpoint other than
//!   AWS's own, which most S3-compatible stores need; virtual-hosted
//!   (`BUCKET.ENDPOINT/KEY`) on AWS, unless the bucket name has a dot (TLS
//!   certificates do not cover it there).

use std::time::Duration;

use rusty_s3::{Bucket as S3Bucket, Credentials, S3Action, UrlStyle};

use crate::error::ConfigError;

/// How long a signed request URL is valid: long enough for a slow request to start,
/// short enough that a leaked URL (in a log, say) is soon useless.
pub const SIGNED_URL_VALIDITY: Duration = Duration::from_secs(15 * 60);

/// Where the endpoint and region come from, beside the environment.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// `--endpoint`: the store's URL (`http://127.0.0.1:3900`).
    pub endpoint: Option<String>,
    /// `--region`.
    pub region: Option<String>,
}

/// A bucket and key prefix (`s3://BUCKET/PREFIX`) with the credentials to sign with.
#[derive(Clone)]
pub struct Bucket {
    bucket: S3Bucket,
    prefix: String,
    credentials: Option<Credentials>,
    shown: String,
}

impl std::fmt::Debug for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("Bucket")
            .field("url", &self.shown)
            .field("endpoint", &self.bucket.base_url().as_str())
            .field("signed", &self.credentials.is_some())
            .finish()
    }
}

/// Whether `url` names a bucket (`s3://`).
pub fn is_s3(url: &str) -> bool {
    url.starts_with("s3://")
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn invalid(setting: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        reason: reason.into(),
    }
}

/// Checks a bucket name as S3 does: 3 to 63 lower-case letters, digits, dots and
/// hyphens, starting and ending with a letter or digit.
fn check_bucket_name(name: &str) -> Result<(), ConfigError> {
    let ok = (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "bucket",
            format!(
                "{name:?} is not a bucket name (3 to 63 lower-case letters, digits, dots and hyphens)"
            ),
        ))
    }
}

impl Bucket {
    /// The bucket `url` (`s3://BUCKET` or `s3://BUCKET/PREFIX`), its endpoint and
    /// region from `opts` or the environment, and the credentials in the
    /// environment, if any.
    pub fn from_env(url: &str, opts: &S3Options) -> Result<Self, ConfigError> {
        let credentials = match (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY")) {
            (Some(key), Some(secret)) => Some(match env("AWS_SESSION_TOKEN") {
                Some(token) => Credentials::new_with_token(key, secret, token),
                None => Credentials::new(key, secret),
            }),
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid(
                    "credentials",
                    "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither (unsigned requests)",
                ))
            }
        };
        Self::new(url, opts, credentials)
    }

    /// As [`Self::from_env`], with the credentials given (`None`: unsigned).
    pub fn new(
        url: &str,
        opts: &S3Options,
        credentials: Option<Credentials>,
    ) -> Result<Self, ConfigError> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            invalid(
                "bucket",
                format!("{url:?} is not an s3://BUCKET/PREFIX URL"),
            )
        })?;
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket_name(name)?;
        let prefix = prefix.trim_matches('/').to_owned();
        if prefix
            .split('/')
            .any(|c| c == "." || c == ".." || (c.is_empty() && !prefix.is_empty()))
            || prefix.chars().any(|c| c.is_control() || c == '\\')
        {
            return Err(invalid(
                "bucket",
                format!("{url:?}: the prefix must be a plain path (no empty, `.` or `..` parts)"),
            ));
        }
        let region = opts
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_owned());
        let given = opts
            .endpoint
            .clone()
            .or_else(|| env("AWS_ENDPOINT_URL_S3"))
            .or_else(|| env("AWS_ENDPOINT_URL"));
        let style = if given.is_some() || name.contains('.') {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let endpoint = given.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
        let parsed = endpoint
            .parse::<url::Url>()
            .map_err(|e| invalid("endpoint", format!("{endpoint:?}: {e}")))?;
        if parsed.path() != "/" || parsed.query().is_some() {
            return Err(invalid(
                "endpoint",
                format!("{endpoint:?}: give the store's URL without a path (the bucket goes in s3://BUCKET/PREFIX)"),
            ));
        }
        let bucket = S3Bucket::new(parsed, style, name.to_owned(), region)
            .map_err(|e| invalid("endpoint", format!("{endpoint:?}: {e}")))?;
        let shown = if prefix.is_empty() {
            format!("s3://{name}")
        } else {
            format!("s3://{name}/{prefix}")
        };
        Ok(Self {
            bucket,
            prefix,
            credentials,
            shown,
        })
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// Whether requests are signed.
    pub fn is_signed(&self) -> bool {
        self.credentials.is_some()
    }

    /// The object key of the repository path `rel`.
    pub fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() {
            rel.to_owned()
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    /// `s3://BUCKET/PREFIX/rel`, for messages.
    pub fn shown(&self, rel: &str) -> String {
        format!("{}/{rel}", self.shown)
    }

    fn signed<'a>(&self, mut action: impl S3Action<'a>, headers: &[(&'a str, &'a str)]) -> String {
        for (k, v) in headers {
            action.headers_mut().insert(*k, *v);
        }
        let url: String = action.sign(SIGNED_URL_VALIDITY).into();
        match url.strip_suffix('?') {
            Some(bare) => bare.to_owned(),
            None => url,
        }
    }

    /// A signed URL to GET `rel` (a presigned URL: it needs no other header).
    pub fn get(&self, rel: &str) -> String {
        let key = self.key(rel);
        self.signed(self.bucket.get_object(self.credentials.as_ref(), &key), &[])
    }

    /// A signed URL to HEAD `rel`.
    pub fn head(&self, rel: &str) -> String {
        let key = self.key(rel);
        self.signed(
            self.bucket.head_object(self.credentials.as_ref(), &key),
            &[],
        )
    }

    /// A signed URL to PUT `rel`; `headers` are signed and must be sent.
    pub fn put(&self, rel: &str, headers: &[(&str, &str)]) -> String {
        let key = self.key(rel);
        self.signed(
            self.bucket.put_object(self.credentials.as_ref(), &key),
            headers,
        )
    }

    /// A signed URL to start a multipart upload of `rel` (POST); `headers` are
    /// signed and must be sent.
    pub fn create_multipart(&self, rel: &str, headers: &[(&str, &str)]) -> String {
        let key = self.key(rel);
        let c = self.credentials.as_ref();
        self.signed(self.bucket.create_multipart_upload(c, &key), headers)
    }

    /// A signed URL to PUT part `part` (1 to 10,000) of the upload `upload_id`.
    pub fn upload_part(
        &self,
        rel: &str,
        part: u16,
        upload_id: &str,
        headers: &[(&str, &str)],
    ) -> String {
        let key = self.key(rel);
        let c = self.credentials.as_ref();
        self.signed(self.bucket.upload_part(c, &key, part, upload_id), headers)
    }

    /// A signed URL and the XML body (POST) that completes the upload `upload_id`
    /// from its parts' ETags, in order.
    pub fn complete_multipart(
        &self,
        rel: &str,
        upload_id: &str,
        etags: &[String],
    ) -> (String, String) {
        let key = self.key(rel);
        let c = self.credentials.as_ref();
        let action = self.bucket.complete_multipart_upload(
            c,
            &key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url: String = action.sign(SIGNED_URL_VALIDITY).into();
        (url, action.body())
    }

    /// A signed URL (DELETE) that abandons the upload `upload_id`.
    pub fn abort_multipart(&self, rel: &str, upload_id: &str) -> String {
        let key = self.key(rel);
        let c = self.credentials.as_ref();
        self.signed(self.bucket.abort_multipart_upload(c, &key, upload_id), &[])
    }
}

/// The `UploadId` of a `CreateMultipartUpload` answer.
pub fn upload_id(body: &[u8]) -> Option<String> {
    rusty_s3::actions::CreateMultipartUpload::parse_response(body)
        .ok()
        .map(|r| r.upload_id().to_owned())
}

/// The `Code` and `Message` of an S3 error answer, for messages.
pub fn error_text(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let field = |tag: &str| {
        let (_, rest) = text.split_once(&format!("<{tag}>"))?;
        let (value, _) = rest.split_once(&format!("</{tag}>"))?;
        Some(value.trim().to_owned())
    };
    match (field("Code"), field("Message")) {
        (Some(c), Some(m)) => Some(format!("{c}: {m}")),
        (Some(c), None) => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(endpoint: &str) -> S3Options {
        S3Options {
            endpoint: Some(endpoint.into()),
            region: Some("garage".into()),
        }
    }

    #[test]
    fn bucket_urls_parse_with_and_without_a_prefix() {
        let creds = Some(Credentials::new("GK1", "secret"));
        let b = Bucket::new(
            "s3://repo/prod/v1/",
            &opts("http://127.0.0.1:3900"),
            creds.clone(),
        )
        .expect("bucket");
        assert_eq!(b.url(), "s3://repo/prod/v1");
        assert_eq!(b.key("root.json"), "prod/v1/root.json");
        let get = b.get("root.json");
        assert!(
            get.starts_with("http://127.0.0.1:3900/repo/prod/v1/root.json?"),
            "{get}"
        );
        assert!(get.contains("X-Amz-Signature="), "{get}");
        assert!(!get.contains("secret"), "{get}");
        let b = Bucket::new("s3://repo", &opts("http://127.0.0.1:3900"), None).expect("bucket");
        assert_eq!(b.key("root.json"), "root.json");
        assert_eq!(b.get("root.json"), "http://127.0.0.1:3900/repo/root.json");
    }

    #[test]
    fn bad_bucket_urls_are_refused() {
        for url in [
            "https://x/y",
            "s3://",
            "s3://Upper",
            "s3://ab",
            "s3://-bucket",
            "s3://bucket/a//b",
            "s3://bucket/../x",
        ] {
            assert!(
                Bucket::new(url, &opts("http://127.0.0.1:1"), None).is_err(),
                "{url}"
            );
        }
        assert!(Bucket::new("s3://bucket", &opts("http://127.0.0.1:1/path"), None).is_err());
        assert!(Bucket::new("s3://bucket", &opts("ftp://127.0.0.1"), None).is_err());
    }

    #[test]
    fn signed_headers_are_named_in_the_signature() {
        let b = Bucket::new(
            "s3://repo",
            &opts("http://127.0.0.1:3900"),
            Some(Credentials::new("GK1", "secret")),
        )
        .expect("bucket");
        let put = b.put("objects/x", &[("content-md5", "AAAA")]);
        assert!(put.contains("content-md5"), "{put}");
    }

    #[test]
    fn s3_errors_read() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>BadDigest</Code><Message>The Content-MD5 you specified did not match</Message></Error>";
        assert_eq!(
            error_text(body).as_deref(),
            Some("BadDigest: The Content-MD5 you specified did not match")
        );
        assert_eq!(error_text(b"nothing"), None);
        assert_eq!(
            upload_id(b"<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>abc</UploadId></InitiateMultipartUploadResult>")
                .as_deref(),
            Some("abc")
        );
    }
}
