//! `deltaward mirror`: real origin and mirror processes on 127.0.0.1, curl as the
//! client. Caching, single flight, verification, offline, restart, eviction, sync.
#![allow(clippy::disallowed_methods)] // reason: tests write and tamper with fixtures directly

mod common;

use std::fs;

use common::net::*;

#[test]
fn the_mirror_relays_documents_and_objects_byte_for_byte() {
    let p = Published::new(2);
    let origin = Server::origin(p.dir(), &p.repo);
    let m = Server::mirror(p.dir(), "mirror", &origin.url, &p.fx.path("cache"), &p.trust(), &[]);
    for rel in [
        "root.json",
        "root.json.minisig",
        "roots/1.root.json",
        "products/pump/channel.json",
        "products/pump/channel.json.minisig",
        "products/pump/releases/2.0/release.json",
        "products/pump/releases/2.0/release.json.minisig",
    ] {
        assert_eq!(get(&format!("{}/{rel}", m.url)), fs::read(p.repo.join(rel)).expect(rel), "{rel}");
    }
    for o in p.objects() {
        let want = fs::read(p.repo.join("objects").join(&o)).expect("object");
        assert_eq!(get(&format!("{}/objects/{o}", m.url)), want);
        // Second time from the cache.
        assert_eq!(get(&format!("{}/objects/{o}", m.url)), want);
    }
    assert_eq!(m.metric("deltaward_mirror_cache_hits_total"), 2);
    assert_eq!(origin.objects_served(), 2);
}
