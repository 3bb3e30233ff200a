package bench_test

func lockdownSteps(args []string) error { return nil }
