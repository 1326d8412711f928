package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/ory/dockertest/v3"
	"github.com/ory/dockertest/v3/docker"
)

// localServerURL is the PostgreSQL server kagzi dev uses when one answers
// there and KAGZI_DATABASE_URL is unset.
const localServerURL = "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"

// installHint says what to install when kagzi dev finds no way to a
// database.
const installHint = `kagzi dev needs PostgreSQL, and found no server on 127.0.0.1:5432, no PostgreSQL binaries and no Docker engine. Any one of these will do:
  - install the PostgreSQL server binaries (kagzi dev starts a private server from them, as you):
      Debian, Ubuntu: sudo apt install postgresql
      Fedora, RHEL:   sudo dnf install postgresql-server
      macOS:          brew install postgresql@16
  - start Docker (kagzi dev runs the postgres:15 image)
  - or point KAGZI_DATABASE_URL at a server you have`

// devCommand runs `kagzi dev [--fresh]`: serve, with a database found or
// started for the purpose.
func devCommand(args []string) error {
	fs := flag.NewFlagSet("kagzi dev", flag.ContinueOnError)
	fs.SetOutput(os.Stderr)
	fresh := fs.Bool("fresh", false, "wipe the private database's data before starting it")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return usagef("dev: %v", err)
	}
	if fs.NArg() > 0 {
		return usagef("dev takes no arguments but --fresh, got %q", fs.Args())
	}
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	if os.Getenv(envPrefix+"_LOG_FORMAT") == "" {
		cfg.LogFormat = "text" // a person reads it
	}
	_, explicit := os.LookupEnv(envPrefix + "_DATABASE_URL")
	root, err := devDataRoot()
	if err != nil {
		return err
	}
	d := devEnv{out: os.Stderr, explicitURL: explicit, localURL: localServerURL, searchDirs: postgresSearchDirs(),
		dataRoot: root, docker: true, fresh: *fresh}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return d.run(ctx, cfg, cfg.logger(os.Stderr))
}

// devEnv is where kagzi dev looks for a database; tests change it.
type devEnv struct {
	out         io.Writer
	explicitURL bool     // KAGZI_DATABASE_URL is set: use it, whatever happens
	localURL    string   // a server that is used when it answers
	searchDirs  []string // where initdb, pg_ctl and postgres are looked for
	dataRoot    string   // the private server's data goes below it
	docker      bool     // try a Docker container last
	fresh       bool     // wipe the private server's data first
}

// devDatabase is the database kagzi dev serves with.
type devDatabase struct {
	url   string
	where string       // for people
	stop  func() error // nil when kagzi dev did not start it
}

// run finds or starts a database, serves on it until ctx ends, and stops
// the database it started.
func (d devEnv) run(ctx context.Context, cfg Config, logger *slog.Logger) (err error) {
	db, err := d.database(ctx, cfg)
	if err != nil {
		return err
	}
	if db.stop != nil {
		defer func() {
			if serr := db.stop(); serr != nil && err == nil {
				err = fmt.Errorf("stop PostgreSQL: %w", serr)
			}
		}()
	}
	cfg.DatabaseURL = db.url
	host, port, _ := net.SplitHostPort(cfg.HTTPAddr)
	if host == "" {
		host = "localhost"
	}
	fmt.Fprintf(d.out, "kagzi dev: database %s: %s\n", redact(db.url), db.where)
	fmt.Fprintf(d.out, "kagzi dev: serving http://%s (try: curl http://%s/readyz); Ctrl-C stops the server", net.JoinHostPort(host, port), net.JoinHostPort(host, port))
	if db.stop != nil {
		fmt.Fprint(d.out, " and its database")
	}
	fmt.Fprintln(d.out)
	return serve(ctx, cfg, logger)
}

func (d devEnv) database(ctx context.Context, cfg Config) (*devDatabase, error) {
	if d.explicitURL {
		return &devDatabase{url: cfg.DatabaseURL, where: "KAGZI_DATABASE_URL"}, nil
	}
	if pingErr := pingPostgres(ctx, d.localURL); pingErr == nil {
		u := withDatabase(d.localURL, "kagzi")
		return &devDatabase{url: u, where: "the server that answers on " + hostOf(d.localURL)}, nil
	}
	if bin, ok := findPostgres(d.searchDirs); ok {
		return d.startPrivate(ctx, bin)
	}
	var dockerErr error
	if d.docker {
		db, err := d.startDocker(ctx)
		if err == nil {
			return db, nil
		}
		dockerErr = err
	}
	msg := installHint
	if dockerErr != nil {
		msg += fmt.Sprintf("\n(Docker: %v)", dockerErr)
	}
	return nil, errors.New(msg)
}

// pingPostgres says whether the server at u accepts a connection.
func pingPostgres(ctx context.Context, u string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		return err
	}
	return conn.Close(ctx)
}

// withDatabase returns u with its database replaced by name.
func withDatabase(u, name string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	p.Path = "/" + name
	return p.String()
}

// hostOf is the host:port of a URL.
func hostOf(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	return p.Host
}

// redact hides a URL's password.
func redact(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return "(a URL that does not parse)"
	}
	return p.Redacted()
}

// devDataRoot is where kagzi dev keeps the data of the servers it starts:
// the user's cache folder; for root /var/cache, because the unprivileged
// user PostgreSQL then runs as cannot enter root's home.
func devDataRoot() (string, error) {
	if os.Geteuid() == 0 {
		return "/var/cache/kagzi", nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("kagzi dev keeps its database in the user's cache folder: %w", err)
	}
	return filepath.Join(dir, "kagzi"), nil
}

// postgresSearchDirs are the folders the PostgreSQL binaries are looked
// for in: PATH, then where the packages of Debian, Red Hat, Homebrew and
// Postgres.app put them, newest major version first.
func postgresSearchDirs() []string {
	dirs := filepath.SplitList(os.Getenv("PATH"))
	for _, pattern := range []string{
		"/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin",
		"/opt/homebrew/opt/postgresql@*/bin", "/usr/local/opt/postgresql@*/bin",
		"/opt/homebrew/opt/postgresql/bin", "/usr/local/opt/postgresql/bin",
		"/Applications/Postgres.app/Contents/Versions/*/bin",
	} {
		m, _ := filepath.Glob(pattern)
		sort.SliceStable(m, func(i, j int) bool { return majorIn(m[i]) > majorIn(m[j]) })
		dirs = append(dirs, m...)
	}
	return dirs
}

var digits = regexp.MustCompile(`\d+`)

// majorIn is the first number in s (a version in a path), 0 without one.
func majorIn(s string) int {
	n, _ := strconv.Atoi(digits.FindString(s))
	return n
}

// postgresBin is a folder with initdb, pg_ctl and postgres.
type postgresBin struct {
	dir   string
	major int
}

func (b postgresBin) path(name string) string { return filepath.Join(b.dir, name) }

// findPostgres returns the first of dirs that holds initdb, pg_ctl and
// postgres.
func findPostgres(dirs []string) (postgresBin, bool) {
	for _, dir := range dirs {
		ok := dir != ""
		for _, name := range []string{"initdb", "pg_ctl", "postgres"} {
			fi, err := os.Stat(filepath.Join(dir, name))
			ok = ok && err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
		}
		if !ok {
			continue
		}
		out, err := exec.Command(filepath.Join(dir, "initdb"), "--version").Output()
		if err != nil {
			continue
		}
		// "initdb (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"
		_, v, _ := strings.Cut(string(out), ")")
		return postgresBin{dir: dir, major: majorIn(v)}, true
	}
	return postgresBin{}, false
}

// startPrivate starts a server of the user's own from bin, its data in
// dataRoot/pgN (created by initdb the first time), on a free port of
// 127.0.0.1 and no unix socket. As root, it runs as an unprivileged user,
// since PostgreSQL refuses to run as root.
func (d devEnv) startPrivate(ctx context.Context, bin postgresBin) (*devDatabase, error) {
	dir := filepath.Join(d.dataRoot, fmt.Sprintf("pg%d", bin.major))
	var cred *devCred
	runAs := ""
	if os.Geteuid() == 0 {
		u, err := unprivilegedUser()
		if err != nil {
			return nil, err
		}
		cred, runAs = u.cred, u.name
		// The folders on the way are root's; the user must pass them.
		if err := os.MkdirAll(d.dataRoot, 0o755); err != nil {
			return nil, err
		}
		if err := reachable(dir, u.cred.Uid); err != nil {
			return nil, fmt.Errorf("PostgreSQL runs as the user %s, which %w", u.name, err)
		}
	}
	pg := func(name string, args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, bin.path(name), args...)
		cmd.Dir = "/"
		cmd.SysProcAttr = pgProcAttr(cred)
		return cmd
	}
	if d.fresh {
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("--fresh: %w", err)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err != nil {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, err
		}
		if cred != nil {
			if err := os.Chown(dir, int(cred.Uid), int(cred.Gid)); err != nil {
				return nil, err
			}
		}
		fmt.Fprintf(d.out, "kagzi dev: creating a PostgreSQL %d cluster in %s\n", bin.major, dir)
		out, err := pg("initdb", "-D", dir, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync").CombinedOutput()
		if err != nil {
			_ = os.RemoveAll(dir) // so that the next try starts afresh
			return nil, fmt.Errorf("initdb: %v\n%s", err, out)
		}
	}
	// A server left running by a kagzi that was killed holds the data.
	if pg("pg_ctl", "status", "-D", dir).Run() == nil {
		if out, err := pg("pg_ctl", "stop", "-D", dir, "-m", "fast", "-w").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("stop the server left running in %s: %v\n%s", dir, err, out)
		}
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	logFile := filepath.Join(dir, "kagzi-dev.log")
	opts := fmt.Sprintf("-p %d -c listen_addresses=127.0.0.1 -c unix_socket_directories=''", port)
	if out, err := pg("pg_ctl", "start", "-D", dir, "-l", logFile, "-w", "-t", "60", "-o", opts).CombinedOutput(); err != nil {
		log, _ := os.ReadFile(logFile)
		return nil, fmt.Errorf("pg_ctl start: %v\n%s%s", err, out, lastLines(log, 10))
	}
	stop := func() error {
		// ctx has ended by now: the stop gets a context of its own.
		cmd := exec.Command(bin.path("pg_ctl"), "stop", "-D", dir, "-m", "fast", "-w")
		cmd.Dir = "/"
		cmd.SysProcAttr = pgProcAttr(cred)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("pg_ctl stop: %v\n%s", err, out)
		}
		fmt.Fprintf(d.out, "kagzi dev: PostgreSQL stopped; its data stays in %s (kagzi dev --fresh wipes it)\n", dir)
		return nil
	}
	where := fmt.Sprintf("a private PostgreSQL %d, data in %s (kept; --fresh wipes it), log in %s", bin.major, dir, logFile)
	if runAs != "" {
		where += ", running as the user " + runAs
	}
	return &devDatabase{url: fmt.Sprintf("postgres://postgres@127.0.0.1:%d/kagzi?sslmode=disable", port), where: where, stop: stop}, nil
}

// devUser is the user the private server runs as when kagzi dev runs as
// root.
type devUser struct {
	name string
	cred *devCred
}

// freePort returns a TCP port of 127.0.0.1 that nothing listens on.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

func lastLines(b []byte, n int) []byte {
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	return bytes.Join(lines[max(0, len(lines)-n):], []byte("\n"))
}

// startDocker runs PostgreSQL 15 in a container, its data in a folder of
// dataRoot, its port on 127.0.0.1 only; stop removes the container.
func (d devEnv) startDocker(ctx context.Context) (*devDatabase, error) {
	pool, err := dockertest.NewPool("")
	if err != nil {
		return nil, err
	}
	if err := pool.Client.Ping(); err != nil {
		return nil, err
	}
	dir := filepath.Join(d.dataRoot, "docker-pg15")
	if d.fresh {
		if err := os.RemoveAll(dir); err != nil {
			return nil, fmt.Errorf("--fresh: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	fmt.Fprintln(d.out, "kagzi dev: starting PostgreSQL 15 in Docker (the first time pulls the postgres:15 image)")
	res, err := pool.RunWithOptions(&dockertest.RunOptions{
		Repository:   "postgres",
		Tag:          "15",
		Env:          []string{"POSTGRES_HOST_AUTH_METHOD=trust"},
		Mounts:       []string{dir + ":/var/lib/postgresql/data"},
		ExposedPorts: []string{"5432/tcp"},
		PortBindings: map[docker.Port][]docker.PortBinding{"5432/tcp": {{HostIP: "127.0.0.1"}}},
	}, func(hc *docker.HostConfig) {
		hc.AutoRemove = true
		hc.RestartPolicy = docker.RestartPolicy{Name: "no"}
	})
	if err != nil {
		return nil, err
	}
	hostPort := res.GetHostPort("5432/tcp")
	pool.MaxWait = time.Minute
	if err := pool.Retry(func() error { return pingPostgres(ctx, "postgres://postgres@"+hostPort+"/postgres?sslmode=disable") }); err != nil {
		_ = pool.Purge(res)
		return nil, err
	}
	return &devDatabase{
		url:   "postgres://postgres@" + hostPort + "/kagzi?sslmode=disable",
		where: fmt.Sprintf("PostgreSQL 15 in the Docker container %s, data in %s (kept; --fresh wipes it)", res.Container.Name, dir),
		stop:  func() error { return pool.Purge(res) },
	}, nil
}
