//! Prints a presigned GET URL (valid 15 minutes) for a repository path in a bucket,
//! signed with the credentials, endpoint and region in the environment, as the
//! mirror signs its upstream requests. `benches/publish-s3.sh` compares the mirror's
//! cold fill from a bucket with curl fetching this URL.
//!
//! ```sh
//! cargo run --release -p deltaward-mirror --example presign -- s3://BUCKET/PREFIX objects/HASH
//! ```

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(bucket), Some(rel)) = (args.next(), args.next()) else {
        eprintln!("usage: presign s3://BUCKET/PREFIX PATH");
        std::process::exit(2);
    };
    match deltaward_mirror::s3::Bucket::from_env(&bucket, &Default::default()) {
        Ok(b) => println!("{}", b.get(&rel)),
        Err(e) => {
            eprintln!("presign: {e}");
            std::process::exit(1);
        }
    }
}
