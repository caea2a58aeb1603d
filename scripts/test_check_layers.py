#!/usr/bin/env python3
"""Self-test of check_layers.py on small fake src/ trees.

Run: python3 scripts/test_check_layers.py   (or: pytest scripts/test_check_layers.py)
"""

import contextlib
import io
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import check_layers  # noqa: E402

TOP_DOWN = [("top", ["a"]), ("middle", ["m"]), ("bottom", ["b"])]
DENY = "#![deny(unsafe_code)]\n"
# aws/mod.rs re-exports a type of aws::service, a layer above aws and aws::client.
RE_EXPORT = {
    "aws/mod.rs": "pub mod client;\npub mod service;\npub use service::Service;\n",
    "aws/service.rs": "pub struct Service;\n",
    "aws/client.rs": "",
}
AWS_LAYERS = [("cache", ["cache"]), ("services", ["aws::service"]),
              ("client", ["aws", "aws::client"])]


class CheckLayersTest(unittest.TestCase):
    def tree(self, files):
        """Write {relative path: text} under a temporary src/ and return that src/."""
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        src = Path(tmp.name) / "src"
        for path, text in {"lib.rs": DENY, **files}.items():
            (src / path).parent.mkdir(parents=True, exist_ok=True)
            (src / path).write_text(text)
        return src

    def imports(self, src):
        """{module: sorted imported modules}, with names as the script prints them."""
        _, graph, _ = check_layers.build_graph(src)
        return {check_layers.name(m): sorted(map(check_layers.name, t)) for m, t in graph.items()}

    def test_cycle_is_reported_with_the_code_making_it(self):
        src = self.tree({
            "a.rs": "use crate::b::helper;\npub fn f() {}\n",
            "b.rs": "pub fn helper() {\n    crate::a::f();\n}\n",
        })
        errors = check_layers.check(src, [("all", ["a", "b"])])
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("a -> b -> a", errors[0])
        self.assertIn("src/a.rs:1  use crate::b::helper", errors[0])
        self.assertIn("src/b.rs:2  crate::a::f", errors[0])

    def test_upward_import_is_reported(self):
        src = self.tree({"a.rs": "", "b.rs": "use crate::a::Thing;\n"})
        errors = check_layers.check(src, TOP_DOWN)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("upward import: b (layer 'bottom') uses a (layer 'top'", errors[0])
        self.assertIn("src/b.rs:1  use crate::a::Thing", errors[0])

    def test_downward_and_same_layer_imports_pass(self):
        src = self.tree({"a.rs": "use crate::b::X;\nuse crate::a2::Y;\n", "a2.rs": "", "b.rs": ""})
        self.assertEqual(check_layers.check(src, [("top", ["a", "a2"]), ("bottom", ["b"])]), [])

    def test_tests_comments_strings_and_chars_are_ignored(self):
        src = self.tree({
            "a.rs": "pub fn f() {}\n",
            "b.rs": r'''//! Uses crate::a::f() in docs only.
/// See [`crate::a::f`].
// use crate::a::f;
/* block /* nested */ crate::a::f() */
pub fn g<'a>(x: &'a str) -> (&'a str, char, &'static str) {
    let _ = ("crate::a::f()", r#"use crate::a::f; "quoted""#, b"crate::a");
    let _ = ('\'', '\\', '\"', "after an escaped quote char: crate::a::f");
    (x, '"', "after a quote char: crate::a::f")
}
#[cfg(test)]
fn helper() -> [u8; 2] { crate::a::f(); [0; 2] }
#[cfg(test)]
use crate::a::f as _;
#[cfg(test)]
mod tests {
    use super::*;
    use crate::a::{self, f};
    #[test]
    fn t() { crate::a::f(); }
}
''',
        })
        self.assertEqual(self.imports(src)["b"], [])
        self.assertEqual(check_layers.check(src, TOP_DOWN), [])

    def test_multi_line_nested_braces_resolve(self):
        src = self.tree({
            "p/mod.rs": "pub mod q;\npub mod y;\npub struct A;\n",
            "p/y.rs": "pub mod z;\n",
            "p/y/z.rs": "pub struct Z;\n",
            "p/q.rs": "use super::{\n    A,\n    y::{z::Z, self as why},\n};\n",
        })
        self.assertEqual(self.imports(src)["p::q"], ["p", "p::y", "p::y::z"])

    def test_inline_paths_and_aliases_count(self):
        src = self.tree({
            "x/mod.rs": "pub mod f;\npub mod retry;\n",
            "x/f.rs": "pub fn f() {}\n",
            "x/retry.rs": "pub fn random_unit() -> f64 { 0.5 }\n",
            "c.rs": "pub fn g() -> f64 {\n    crate::x::retry::random_unit()\n}\n",
            "d.rs": "use crate::x::f;\npub fn h() { f::f() }\n",
            "e.rs": "use crate::x as ex;\npub fn h() { ex::f::f() }\n",
        })
        imports = self.imports(src)
        self.assertEqual(imports["c"], ["x::retry"])
        self.assertEqual(imports["d"], ["x::f"])
        self.assertEqual(imports["e"], ["x", "x::f"])

    def test_main_names_the_library_by_its_crate_name(self):
        src = self.tree({
            "main.rs": "use secrets_manager_agent::{aws, config};\nuse aws::client;\n"
                       "fn main() { config::load(); crate::helper(); }\n",
            "aws/mod.rs": "pub mod client;\n",
            "aws/client.rs": "",
            "config.rs": "",
        })
        self.assertEqual(self.imports(src)["<main>"], ["aws", "aws::client", "config"])

    def test_mod_declarations_and_re_exports_of_children_do_not_count(self):
        src = self.tree({
            "b/mod.rs": "pub mod m;\nmod x;\npub use m::Thing;\npub use self::x::*;\n"
                        "pub(crate) fn env_var() {}\n",  # its own, not from the glob
            "b/m.rs": "pub struct Thing;\nfn f() { super::env_var(); }\n",
            "b/x.rs": "",
        })
        self.assertEqual(self.imports(src)["b"], [])
        self.assertEqual(self.imports(src)["b::m"], ["b"])  # a child's `super::` counts
        layers = [("top", ["b::m", "b::x"]), ("bottom", ["b"])]
        self.assertEqual(check_layers.check(src, layers), [])

    def test_re_export_does_not_hide_an_upward_import(self):
        src = self.tree({**RE_EXPORT, "aws/client.rs": "use crate::aws::Service;\n"
                                                       "fn f() {\n    super::Service::new();\n}\n"})
        errors = check_layers.check(src, AWS_LAYERS)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("upward import: aws::client (layer 'client') uses aws::service "
                      "(layer 'services', above it)", errors[0])
        self.assertIn("src/aws/client.rs:1  use crate::aws::Service", errors[0])
        self.assertIn("src/aws/client.rs:3  super::Service::new", errors[0])

    def test_re_export_used_from_above_passes(self):
        src = self.tree({**RE_EXPORT, "cache.rs": "use crate::aws::Service;\n"
                                                  "fn f() { crate::aws::Service::new(); }\n"})
        self.assertEqual(self.imports(src)["cache"], ["aws::service"])
        self.assertEqual(check_layers.check(src, AWS_LAYERS), [])

    def test_re_exports_resolve_to_the_defining_module(self):
        src = self.tree({
            "p/mod.rs": "pub mod x;\npub mod inner;\npub struct Own;\n"
                        "pub use self::x::{A, B as Bee};\npub use self::x as ex;\n"
                        "pub use crate::y::C;\npub use inner::*;\npub use std::fmt::Write;\n",
            "p/x.rs": "pub struct A;\npub struct B;\n",
            "p/inner.rs": "pub struct G;\n",
            "q/mod.rs": "pub mod r;\n",
            "q/r.rs": "pub use super::super::p::C as Sea;\n",  # a re-export of a re-export
            "y.rs": "pub struct C;\n",
            "u1.rs": "use crate::p::{A, Bee};\n",
            "u2.rs": "use crate::p::ex::B;\n",
            "u3.rs": "use crate::q::r::Sea;\n",
            "u4.rs": "fn f() { crate::p::G::new(); }\n",  # not named in p: from its glob
            "u5.rs": "use crate::p::{Own, Write};\n",  # p's own, or another crate's: not the glob's
        })
        imports = self.imports(src)
        self.assertEqual(imports["q::r"], ["y"])
        expected = {"u1": ["p::x"], "u2": ["p::x"], "u3": ["y"], "u4": ["p::inner"], "u5": ["p"]}
        self.assertEqual({m: imports[m] for m in expected}, expected)

    def test_name_behind_several_globs_is_reported(self):
        src = self.tree({
            "p/mod.rs": "pub mod x;\npub mod z;\npub use x::*;\npub use z::*;\n",
            "p/x.rs": "pub struct A;\n",
            "p/z.rs": "pub struct B;\n",
            "u.rs": "use crate::p::A;\n",
        })
        errors = check_layers.check(src, [("all", ["p", "u"])])
        self.assertEqual(errors, ["src/u.rs:1: cannot tell which module crate::p::A comes from: p "
                                  "has glob imports of p::x, p::z and no `use` naming A; "
                                  "import A by name there"])

    def test_unsafe_outside_the_unsafe_module_is_reported(self):
        src = self.tree({
            "lib.rs": DENY + "pub mod a;\n#[allow(unsafe_code)]\npub mod os;\n",
            "os/mod.rs": "pub mod io;\npub fn f() { unsafe { g() } }\n",
            "os/io.rs": "pub unsafe fn g() {}\n",
            "a.rs": "pub fn f() {}\n\n#[cfg(test)]\nmod tests {\n    fn t() { unsafe { x() } }\n}\n"
                    "#[no_mangle]\npub extern \"C\" fn exported() {}\n",
        })
        self.assertEqual(check_layers.unsafe_errors(src), [
            "src/a.rs:5: unsafe code outside os: `unsafe` (only os may use unsafe)",
            "src/a.rs:7: unsafe code outside os: `#[no_mangle]` (only os may use unsafe)",
        ])

    def test_allowing_unsafe_code_elsewhere_is_reported(self):
        src = self.tree({
            "lib.rs": DENY + "#![allow(unsafe_code)]\n"
                      "#[allow(unsafe_code)]\npub mod a;\n"
                      "#[allow(unsafe_code)]\n#[cfg(unix)]\npub(crate) mod os;\n",
            "os/mod.rs": "#![allow(unsafe_code)]\n",
            "a.rs": "//! a\n#![allow(dead_code, unsafe_code)]\n#[expect(unsafe_code)]\nfn f() {}\n"
                    "#[cfg_attr(unix, warn(unsafe_code))]\nfn g() {}\n",
        })
        lifts = "lifts the crate's deny(unsafe_code)"
        errors = check_layers.unsafe_errors(src)
        self.assertEqual([error.split(": only")[0] for error in errors], [
            f"src/a.rs:2: `#![allow(dead_code, unsafe_code)]` {lifts}",
            f"src/a.rs:3: `#[expect(unsafe_code)]` {lifts}",
            f"src/a.rs:5: `#[cfg_attr(unix, warn(unsafe_code))]` {lifts}",
            f"src/lib.rs:2: `#![allow(unsafe_code)]` {lifts}",
            f"src/lib.rs:3: `#[allow(unsafe_code)]` {lifts}",
            f"src/os/mod.rs:1: `#![allow(unsafe_code)]` {lifts}",
        ])
        self.assertIn("only `mod os` in src/lib.rs may allow it", errors[0])

    def test_unsafe_in_comments_and_strings_is_ignored(self):
        src = self.tree({
            "lib.rs": "//! The crate; only os has unsafe code.\n" + DENY + "\n"
                      "// #[allow(unsafe_code)]\npub mod a;\n#[allow(unsafe_code)]\npub mod os;\n",
            "os.rs": "pub fn f() { unsafe { libc::getpid() }; }\n",
            "a.rs": "/// Not `unsafe`, /* unsafe { } */ see #[allow(unsafe_code)].\n"
                    "const S: &str = \"unsafe { x }\";\n"
                    "const R: &str = r#\"#[no_mangle] \"unsafe\"\"#;\n"
                    "const C: char = 'u'; // unsafe\nfn unsafe_code_free() {}\n",
        })
        self.assertEqual(check_layers.unsafe_errors(src), [])

    def test_crate_roots_must_deny_unsafe_code(self):
        src = self.tree({
            "lib.rs": "//! docs\n#![cfg_attr(test, deny(unsafe_code))]\npub mod a;\n",
            "main.rs": "//! The binary.\n\n#![forbid(unsafe_code)]\nfn main() {}\n",
            "a.rs": "#![deny(unsafe_code)]\n",  # not a crate root: says nothing for the crate
        })
        self.assertEqual(check_layers.unsafe_errors(src), [
            "src/lib.rs: no #![deny(unsafe_code)] or #![forbid(unsafe_code)] at the top: "
            "unsafe code would be allowed in every module",
        ])
        (src / "main.rs").write_text("fn main() {}\n")
        self.assertEqual(len(check_layers.unsafe_errors(src)), 2)
        self.assertIn("src/main.rs: no #![deny(unsafe_code)]", check_layers.unsafe_errors(src)[1])

    def test_exact_pattern_beats_prefix(self):
        src = self.tree({"b/mod.rs": "pub mod http;\n", "b/http.rs": "use crate::a::X;\n", "a.rs": ""})
        layers = [("top", ["b"]), ("middle", ["a"]), ("bottom", ["b::http"])]
        errors = check_layers.check(src, layers)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("upward import: b::http (layer 'bottom')", errors[0])

    def test_unmatched_module_is_reported(self):
        src = self.tree({"a.rs": "", "stray.rs": ""})
        errors = check_layers.check(src, TOP_DOWN)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("module stray (src/stray.rs) is in no layer", errors[0])
        self.assertIn("add it to LAYERS in scripts/check_layers.py", errors[0])

    def test_exit_status_and_code_map(self):
        ok = self.tree({"config.rs": "", "sync.rs": "use crate::config::Config;\n"})
        bad = self.tree({"config.rs": "use crate::sync::lock;\n", "sync.rs": "use crate::config::C;\n"})
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            self.assertEqual(check_layers.main(["--print", str(ok)]), 0)
            self.assertEqual(check_layers.main([str(bad)]), 1)
        self.assertIn("  sync    -> config", out.getvalue())
        self.assertIn("config -> sync -> config", out.getvalue())


if __name__ == "__main__":
    unittest.main()
