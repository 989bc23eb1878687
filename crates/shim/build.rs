//! Links `flotilla-shim` as a position-dependent executable.
//!
//! Every task has its own shim, so what one shim does not share with the others is paid once
//! per task. A position-independent executable is relocated at load: its `.data.rel.ro` and
//! GOT (vtables, string and function addresses; 80 KiB built alone, 264 KiB in the workspace
//! build) become private dirty pages in every shim. Linked at a fixed address those pages need
//! no relocation and stay clean pages of the binary, shared by every shim through the page
//! cache. The code was compiled position-independent all the same, which a fixed-address link
//! accepts; the libraries, heap and stacks are still placed at random.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bin=flotilla-shim=-no-pie");
    }
}
