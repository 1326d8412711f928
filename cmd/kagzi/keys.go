package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/kagzi/kagzi/auth"
	"github.com/kagzi/kagzi/domain"
	"github.com/kagzi/kagzi/postgres"
)

// keysStore is what the keys command needs of storage.
type keysStore interface {
	auth.Creator
	ListAPIKeys(ctx context.Context, p domain.Page) ([]domain.APIKey, string, error)
	RevokeAPIKey(ctx context.Context, keyID string) (domain.APIKey, error)
}

// keysCmd runs "kagzi keys ..." straight on the database, so that the
// first key can be made before any key could call the API. Running servers
// hear of every change within a second (NOTIFY).
func keysCmd(ctx context.Context, cfg Config, logger *slog.Logger, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return errors.New("keys needs one of: create, list, revoke ID")
	}
	if cfg.AutoMigrate {
		if err := migrateUp(ctx, cfg, logger); err != nil {
			return err
		}
	}
	pool, err := postgres.NewPool(ctx, cfg.DatabaseURL, 2)
	if err != nil {
		return err
	}
	defer pool.Close()
	return runKeys(ctx, postgres.NewStore(pool, 0), args, stdout, stderr)
}

// runKeys runs one keys subcommand on store.
func runKeys(ctx context.Context, store keysStore, args []string, stdout, stderr io.Writer) error {
	switch args[0] {
	case "create":
		return createKey(ctx, store, args[1:], stdout, stderr)
	case "list":
		if len(args) != 1 {
			return fmt.Errorf("keys list takes no arguments, got %q", args[1:])
		}
		return listKeys(ctx, store, stdout)
	case "revoke":
		if len(args) != 2 {
			return errors.New("keys revoke needs one key ID")
		}
		if err := domain.ValidateUUID("ID", args[1]); err != nil {
			return err
		}
		k, err := store.RevokeAPIKey(ctx, args[1])
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %s (%s) at %s\n", k.KeyID, k.Name, k.RevokedAt.Format(time.RFC3339))
		return nil
	}
	return fmt.Errorf("unknown keys command %q", args[0])
}

// stringsFlag is a flag that may be given many times.
type stringsFlag []string

func (f *stringsFlag) String() string     { return strings.Join(*f, ",") }
func (f *stringsFlag) Set(v string) error { *f = append(*f, v); return nil }

// createKey prints the secret alone on stdout, so that
// KEY=$(kagzi keys create ...) works; what else it says goes to stderr.
func createKey(ctx context.Context, store keysStore, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("keys create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		n          domain.NewAPIKey
		role       string
		namespaces stringsFlag
		expiresIn  time.Duration
	)
	fs.StringVar(&n.Name, "name", "", "the key's name (required)")
	fs.StringVar(&role, "role", "", "admin, client, worker or reader (required)")
	fs.Var(&namespaces, "namespace", "a namespace the key may act in; repeat for more (default: every namespace)")
	fs.DurationVar(&expiresIn, "expires-in", 0, "how long the key works, such as 720h (default: until revoked)")
	if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("keys create: unexpected arguments %q", fs.Args())
	}
	if expiresIn < 0 {
		return fmt.Errorf("keys create: --expires-in must be positive, not %s", expiresIn)
	}
	n.Role = domain.Role(role)
	n.Namespaces = namespaces
	if len(n.Namespaces) == 0 {
		n.Namespaces = []string{domain.AllNamespaces}
	}
	now := time.Now()
	if expiresIn > 0 {
		n.ExpiresAt = domain.TimestampOf(now.Add(expiresIn))
	}
	key, secret, err := auth.Create(ctx, store, n, now)
	if err != nil {
		return fmt.Errorf("keys create: %w", err)
	}
	fmt.Fprintf(stderr, "created key %s (%s, role %s, namespaces %s); its secret, shown this once, follows on stdout\n",
		key.KeyID, key.Name, key.Role, strings.Join(key.Namespaces, ","))
	fmt.Fprintln(stdout, secret)
	return nil
}

func listKeys(ctx context.Context, store keysStore, stdout io.Writer) error {
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KEY_ID\tNAME\tROLE\tNAMESPACES\tCREATED\tEXPIRES\tLAST_USED\tREVOKED")
	when := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.Format(time.RFC3339)
	}
	p := domain.Page{Limit: domain.MaxPageLimit}
	for {
		keys, next, err := store.ListAPIKeys(ctx, p)
		if err != nil {
			return err
		}
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%q\t%s\t%s\t%s\t%s\t%s\t%s\n", k.KeyID, k.Name, k.Role, strings.Join(k.Namespaces, ","),
				k.CreatedAt.Format(time.RFC3339), when(k.ExpiresAt), when(k.LastUsedAt), when(k.RevokedAt))
		}
		if next == "" {
			return tw.Flush()
		}
		p.After = next
	}
}
