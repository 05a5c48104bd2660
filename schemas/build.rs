//! Embeds every released schema, `avro/<topic>/v<n>.avsc`, into `catalog::SCHEMAS`: the
//! directory is the list, so a topic's name is written in one source file only
//! (`events::catalog`) and a new version is one new file.

use std::fmt::Write;
use std::path::Path;

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let avro = Path::new(&root).join("avro");
    println!("cargo:rerun-if-changed=avro");
    let mut schemas: Vec<(String, u32, String)> = Vec::new();
    for topic in std::fs::read_dir(&avro)
        .expect("schemas/avro exists")
        .flatten()
    {
        let name = topic.file_name().to_string_lossy().to_string();
        for file in std::fs::read_dir(topic.path())
            .expect("a topic directory")
            .flatten()
        {
            let file_name = file.file_name().to_string_lossy().to_string();
            let version = file_name
                .strip_prefix('v')
                .and_then(|v| v.strip_suffix(".avsc"))
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or_else(|| panic!("{name}/{file_name} is not named v<n>.avsc"));
            schemas.push((name.clone(), version, format!("/avro/{name}/{file_name}")));
        }
    }
    schemas.sort();
    let mut out = String::from("&[\n");
    // Paths relative to the crate, resolved when the crate compiles: the generated list is
    // the same in every checkout sharing a target directory.
    for (topic, version, path) in schemas {
        writeln!(
            out,
            "    TopicSchema {{ topic: {topic:?}, version: {version}, \
             avsc: include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), {path:?})) }},"
        )
        .expect("writing to a String");
    }
    out.push(']');
    let target =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("schemas.rs");
    std::fs::write(target, out).expect("OUT_DIR is writable");
}
