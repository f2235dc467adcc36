use super::*;

#[test]
fn builtins_load_without_errors() {
    let (tools, errors) = builtin_tools();
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(tools.len(), 9);
}
