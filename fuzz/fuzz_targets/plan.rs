//! The plan loader (src/plan/load.rs): untrusted JSON in three forms. What loads must survive the
//! trip through the document this tool writes (`k8s_plan.json`): same items, same digest, and the
//! kubectl review script renders.

#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use modekeeper::plan::{PlanFormat, parse_plan, render_kubectl_script};

#[global_allocator]
static ALLOC: common::Counting = common::Counting;

const CAP: usize = 64 << 20;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    common::bounded(CAP, "plan", || {
        let Ok((plan, _)) = parse_plan(text) else {
            return;
        };
        let doc = plan.to_document();
        let (again, format) = parse_plan(&doc).expect("a written plan loads");
        assert_eq!(format, PlanFormat::Envelope);
        assert_eq!(again, plan, "plan changed through its own document");
        assert_eq!(again.digest(), plan.digest());
        let array = serde_json::to_string(&plan.items_json()).unwrap();
        let (as_array, _) = parse_plan(&array).expect("the items array loads");
        assert_eq!(as_array.digest(), plan.digest());
        let script = render_kubectl_script(&plan);
        assert!(!script.is_empty());
    })
});
