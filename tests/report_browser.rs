//! The report as a person sees it: headless Chromium (Debian's `chromium`, installed by
//! scripts/setup.sh) renders the page of every real trace and of the closed-loop fixture. Each
//! screenshot must be non-blank (many colours, the p50 series' colour present, enough non-background
//! pixels), dark mode must really be dark, and the DOM after rendering must hold the SVG series and
//! the bands the artifacts call for.
//!
//! Without Chromium this test fails, unless MODEKEEPER_SKIP_BROWSER=1 is set outside CI. Screenshots
//! are kept in $MODEKEEPER_SCREENSHOT_DIR (default: <target>/tmp/report-screenshots).

mod report_support;

use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use report_support::{closed_loop_fixture, observe, report, traces};

fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MODEKEEPER_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

fn chromium_or_skip() -> Option<PathBuf> {
    if let Some(p) = find_chromium() {
        return Some(p);
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    let skip = std::env::var("MODEKEEPER_SKIP_BROWSER").is_ok_and(|v| v == "1");
    if skip && !in_ci {
        eprintln!("skipping the browser test: no chromium on PATH and MODEKEEPER_SKIP_BROWSER=1");
        return None;
    }
    panic!(
        "headless Chromium is needed for the report screenshots and was not found on PATH \
         (install it with scripts/setup.sh, i.e. `apt-get install -y chromium`; locally, \
         MODEKEEPER_SKIP_BROWSER=1 skips this test)"
    );
}

fn screenshot_dir() -> PathBuf {
    let d = std::env::var_os("MODEKEEPER_SCREENSHOT_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-screenshots"));
    fs::create_dir_all(&d).unwrap();
    d
}

/// Runs Chromium headless on `page` with `args`; returns stdout. Fails after two minutes.
fn chromium(exe: &Path, page: &Path, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let url = format!("file://{}", page.canonicalize().unwrap().display());
    let mut child = Command::new(exe)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1400,1000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(&url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("chromium did not finish within 120 s on {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a screenshot shows, in numbers.
struct Picture {
    distinct: usize,
    background: [u8; 3],
    non_background_share: f64,
    /// Pixels within a small distance of a colour.
    near: HashMap<[u8; 3], usize>,
}

fn analyse(png_path: &Path, colours: &[[u8; 3]]) -> Picture {
    let decoder = png::Decoder::new(std::io::BufReader::new(fs::File::open(png_path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let px: Vec<[u8; 3]> = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    let mut counts: HashMap<[u8; 3], usize> = HashMap::new();
    for p in &px {
        *counts.entry(*p).or_default() += 1;
    }
    let (background, bg_n) = counts
        .iter()
        .max_by_key(|(_, n)| **n)
        .map(|(c, n)| (*c, *n))
        .unwrap();
    let near = colours
        .iter()
        .map(|c| {
            let n = px
                .iter()
                .filter(|p| (0..3).all(|i| (i32::from(p[i]) - i32::from(c[i])).abs() <= 24))
                .count();
            (*c, n)
        })
        .collect();
    Picture {
        distinct: counts.keys().collect::<HashSet<_>>().len(),
        background,
        non_background_share: 1.0 - bg_n as f64 / px.len() as f64,
        near,
    }
}

fn luma(c: [u8; 3]) -> f64 {
    0.2126 * f64::from(c[0]) + 0.7152 * f64::from(c[1]) + 0.0722 * f64::from(c[2])
}

/// The p50 series' colours in the page's CSS (light, dark).
const P50_LIGHT: [u8; 3] = [0x1f, 0x5f, 0xbf];
const P50_DARK: [u8; 3] = [0x6e, 0xa8, 0xfe];

/// Why a screenshot does not look like a rendered report, if it does not.
fn screenshot_problem(png_path: &Path, dark: bool) -> Option<String> {
    let p50 = if dark { P50_DARK } else { P50_LIGHT };
    let pic = analyse(png_path, &[p50]);
    let name = png_path.display();
    if pic.distinct < 64 {
        return Some(format!("{name}: only {} colours: blank?", pic.distinct));
    }
    if pic.non_background_share <= 0.04 {
        return Some(format!(
            "{name}: {:.1}% of pixels differ from the background",
            pic.non_background_share * 100.0
        ));
    }
    if pic.near[&p50] < 300 {
        return Some(format!(
            "{name}: the p50 line is missing ({} px)",
            pic.near[&p50]
        ));
    }
    let l = luma(pic.background);
    if dark && l >= 60.0 {
        return Some(format!("{name}: dark mode background {:?}", pic.background));
    }
    if !dark && l <= 200.0 {
        return Some(format!("{name}: light background {:?}", pic.background));
    }
    None
}

fn check_screenshot(png_path: &Path, dark: bool) {
    if let Some(p) = screenshot_problem(png_path, dark) {
        panic!("{p}");
    }
}

/// The DOM after rendering holds what the artifacts call for.
fn check_dom(dom: &str, what: &str, bands: &[String], markers: bool) {
    for series in ["step_time_p50", "step_time_p95", "loss"] {
        let at = dom
            .find(&format!("data-series=\"{series}\""))
            .unwrap_or_else(|| panic!("{what}: series {series} missing from the DOM"));
        let tag = &dom[dom[..at].rfind('<').unwrap()..at + dom[at..].find('>').unwrap()];
        assert!(
            tag.contains(" d=\"M"),
            "{what}: series {series} has no path: {tag}"
        );
    }
    for b in bands {
        assert!(
            dom.contains(&format!("data-label=\"{b}\"")),
            "{what}: band {b} missing"
        );
    }
    assert_eq!(
        dom.contains("class=\"band c"),
        !bands.is_empty(),
        "{what}: bands"
    );
    if markers {
        assert!(dom.contains("class=\"marker proposal\""), "{what}: markers");
    }
}

#[test]
fn report_pages_render_in_headless_chromium() {
    let Some(exe) = chromium_or_skip() else {
        return;
    };
    let shots = screenshot_dir();
    let work = tempfile::tempdir().unwrap();
    let mut made = Vec::new();
    for trace in traces() {
        let name = trace
            .file_name()
            .unwrap()
            .to_string_lossy()
            .replace(".jsonl.gz", "");
        let out = work.path().join(&name);
        observe(&trace, &out);
        let page = work.path().join(format!("{name}.html"));
        report(&out, &page, &[]);
        // The bands a person should see: observe's episodes that are not marginal blips.
        let rep: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(out.join("observe_latest.json")).unwrap())
                .unwrap();
        let mut bands: Vec<String> = rep["episodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["confidence"] != "low")
            .map(|e| e["symptom"].as_str().unwrap().to_string())
            .collect();
        bands.dedup();
        let dom = chromium(&exe, &page, &["--dump-dom"]);
        check_dom(&dom, &name, &bands, false);
        let png_path = shots.join(format!("{name}.png"));
        chromium(
            &exe,
            &page,
            &[&format!("--screenshot={}", png_path.display())],
        );
        check_screenshot(&png_path, false);
        made.push(png_path);
        if name == "combo" {
            let dark = shots.join("combo-dark.png");
            chromium(
                &exe,
                &page,
                &[
                    "--force-dark-mode",
                    &format!("--screenshot={}", dark.display()),
                ],
            );
            check_screenshot(&dark, true);
            made.push(dark);
        }
    }
    let page = work.path().join("closed-loop.html");
    report(&closed_loop_fixture(), &page, &[]);
    let dom = chromium(&exe, &page, &["--dump-dom"]);
    let chords: Vec<String> = ["INPUT-STRAGGLER", "BURST-ABSORB", "RECOVER-RELOCK"]
        .map(String::from)
        .to_vec();
    check_dom(&dom, "closed-loop", &chords, true);
    for (file, dark) in [("closed-loop.png", false), ("closed-loop-dark.png", true)] {
        let png_path = shots.join(file);
        let mut args = vec![format!("--screenshot={}", png_path.display())];
        if dark {
            args.push("--force-dark-mode".into());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        chromium(&exe, &page, &args);
        check_screenshot(&png_path, dark);
        made.push(png_path);
    }
    eprintln!("screenshots:");
    for p in &made {
        eprintln!("  {}", p.display());
    }
    assert_eq!(made.len(), traces().len() + 3);
}

#[test]
fn a_blank_page_fails_the_screenshot_check() {
    // The checks above must be able to fail: a page with nothing on it does.
    let Some(exe) = chromium_or_skip() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("blank.html");
    fs::write(&page, "<!doctype html><html><body></body></html>").unwrap();
    let png_path = dir.path().join("blank.png");
    chromium(
        &exe,
        &page,
        &[&format!("--screenshot={}", png_path.display())],
    );
    let problem = screenshot_problem(&png_path, false);
    assert!(
        problem.as_deref().is_some_and(|p| p.contains("blank?")),
        "a blank screenshot passed the check: {problem:?}"
    );
}
