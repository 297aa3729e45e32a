// The binary embeds target/site (built by scripts/lib.sh build_site). Make sure the folder exists
// so a plain `cargo check` works on a fresh clone; the pages then load without their WASM.
fn main() {
    let site = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/site/pkg");
    let _ = std::fs::create_dir_all(site);
    println!("cargo:rerun-if-changed=../target/site");
}
