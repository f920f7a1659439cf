"""The config checks: values of each group (`schema`), the entries that name classes (`targets`),
the rules that tie groups together (`rules`), and the command line composed and checked before
Hydra makes a run folder (`compose`)."""
