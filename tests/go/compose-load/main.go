// compose-load loads a Compose file with compose-go (github.com/compose-spec/compose-go/v2, the loader
// `docker compose` itself uses): interpolation from an env file, schema validation, normalization and
// consistency checks (every secret, volume and depends_on target must exist). It prints the resolved
// project as JSON, or the loader's error on stderr with exit status 1.
//
//	compose-load -f docker-compose.yml --env-file .env.example
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	file := flag.String("f", "docker-compose.yml", "the Compose file")
	envFile := flag.String("env-file", "", "env file for interpolation (like docker compose --env-file)")
	flag.Parse()
	fns := []cli.ProjectOptionsFn{cli.WithWorkingDirectory("."), cli.WithInterpolation(true), cli.WithNormalization(true), cli.WithConsistency(true)}
	if *envFile != "" {
		fns = append(fns, cli.WithEnvFiles(*envFile), cli.WithDotEnv)
	}
	opts, err := cli.NewProjectOptions([]string{*file}, fns...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "compose-load:", err)
		os.Exit(1)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "compose-load:", err)
		os.Exit(1)
	}
	b, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintln(os.Stderr, "compose-load:", err)
		os.Exit(1)
	}
	os.Stdout.Write(b)
	os.Stdout.Write([]byte("\n"))
}
