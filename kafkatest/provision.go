package kafkatest

// Goroutines: none. Provision runs Maven as a child process and waits for
// it; concurrent calls (in one process or several) each build a private
// temporary directory and rename it into place, so the cache is never seen
// half-written.

import (
	"bytes"
	"context"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// DefaultKafkaVersion is the Apache Kafka version a real cluster runs unless
// WithKafkaVersion or the KPUSH_KAFKA_VERSION environment variable says
// otherwise: the newest release on Maven Central when this was written.
const DefaultKafkaVersion = "4.4.0"

// Environment variables read by the real-cluster helpers.
const (
	// EnvRealKafka set to 1 enables the real-broker tests (RequireReal).
	EnvRealKafka = "KPUSH_REAL_KAFKA"
	// EnvKafkaSeeds, a comma-separated host:port list, points real-broker
	// tests at an existing cluster instead of starting one; it also enables
	// them.
	EnvKafkaSeeds = "KPUSH_KAFKA_SEEDS"
	// EnvKafkaVersion overrides DefaultKafkaVersion.
	EnvKafkaVersion = "KPUSH_KAFKA_VERSION"
	// EnvKafkaCache overrides the cache directory (default
	// os.UserCacheDir()/kpush/kafka).
	EnvKafkaCache = "KPUSH_KAFKA_CACHE"
)

// Errors from Provision and the real cluster. Each is wrapped with details;
// match with errors.Is.
var (
	// ErrNoJava means no java executable (17 or newer) is on PATH.
	ErrNoJava = errors.New("kafkatest: java not found on PATH (a Kafka broker needs Java 17+)")
	// ErrNoMaven means no mvn executable is on PATH, and the version is not
	// cached yet.
	ErrNoMaven = errors.New("kafkatest: mvn not found on PATH (needed once per Kafka version to fetch the broker)")
	// ErrBadVersion means a Kafka version string is not of the form 4.1.0.
	ErrBadVersion = errors.New("kafkatest: bad Kafka version")
	// ErrProvision means Maven failed to fetch the broker.
	ErrProvision = errors.New("kafkatest: provisioning Kafka failed")
)

//go:embed realkafka/pom.xml
var pomXML []byte

var versionRE = regexp.MustCompile(`^[0-9]+\.[0-9]+\.[0-9]+$`)

// completeMarker is written last into a provisioned directory.
const completeMarker = ".complete"

// Install is a provisioned Apache Kafka version: its jars and the logging
// setup its broker needs.
type Install struct {
	Version string
	Dir     string // the cache directory of this version
	JarsDir string // every jar of the broker's runtime classpath

	// log4j1 is true for brokers that log through reload4j (3.x), false for
	// log4j2 (4.x).
	log4j1 bool
}

// Classpath returns the java -cp argument for the install.
func (in *Install) Classpath() string { return filepath.Join(in.JarsDir, "*") }

// KafkaVersion returns the version real clusters run: KPUSH_KAFKA_VERSION
// if set, else DefaultKafkaVersion.
func KafkaVersion() string {
	if v := strings.TrimSpace(os.Getenv(EnvKafkaVersion)); v != "" {
		return v
	}
	return DefaultKafkaVersion
}

// CacheDir returns the directory holding one subdirectory per provisioned
// Kafka version: KPUSH_KAFKA_CACHE, else os.UserCacheDir()/kpush/kafka.
func CacheDir() (string, error) {
	if d := os.Getenv(EnvKafkaCache); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrProvision, err)
	}
	return filepath.Join(d, "kpush", "kafka"), nil
}

// Provision returns the Kafka broker of the given version, fetching it and
// its runtime dependencies from Maven Central into CacheDir()/version the
// first time (about a minute; later calls only check the directory). It
// needs java on PATH, and mvn the first time.
func Provision(ctx context.Context, version string) (*Install, error) {
	if !versionRE.MatchString(version) {
		return nil, fmt.Errorf("%w: %q, want e.g. %s", ErrBadVersion, version, DefaultKafkaVersion)
	}
	if _, err := exec.LookPath("java"); err != nil {
		return nil, ErrNoJava
	}
	cache, err := CacheDir()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(cache, version)
	if _, err := os.Stat(filepath.Join(dir, completeMarker)); err == nil {
		return loadInstall(version, dir)
	}
	if _, err := exec.LookPath("mvn"); err != nil {
		return nil, ErrNoMaven
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProvision, err)
	}
	tmp, err := os.MkdirTemp(cache, version+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProvision, err)
	}
	defer os.RemoveAll(tmp) // a no-op after the rename
	if err := fetchJars(ctx, tmp, version); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(tmp, completeMarker), []byte(version+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProvision, err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Another process finished first: use its copy.
		if _, serr := os.Stat(filepath.Join(dir, completeMarker)); serr != nil {
			return nil, fmt.Errorf("%w: %w", ErrProvision, err)
		}
	}
	return loadInstall(version, dir)
}

// fetchJars runs Maven in dir: the broker's runtime dependencies, then the
// slf4j binding the published POM leaves out.
func fetchJars(ctx context.Context, dir, version string) error {
	pom := filepath.Join(dir, "pom.xml")
	if err := os.WriteFile(pom, pomXML, 0o644); err != nil {
		return fmt.Errorf("%w: %w", ErrProvision, err)
	}
	jars := filepath.Join(dir, "jars")
	if err := mvn(ctx, dir, "-f", pom, "-Dkafka.version="+version, "-DincludeScope=runtime",
		"-DoutputDirectory="+jars, "dependency:copy-dependencies"); err != nil {
		return err
	}
	extra, err := slf4jBinding(jars)
	if err != nil {
		return err
	}
	for _, artifact := range extra {
		if err := mvn(ctx, dir, "-f", pom, "-Dartifact="+artifact, "-DoutputDirectory="+jars,
			"dependency:copy"); err != nil {
			return err
		}
	}
	return nil
}

func mvn(ctx context.Context, dir string, args ...string) error {
	cmd := exec.CommandContext(ctx, "mvn", append([]string{"-q", "-B"}, args...)...)
	cmd.Dir = dir
	// mvn execs a JVM; like the broker's, it dies with this process, so a
	// test binary killed mid-download leaves no Maven behind.
	cmd.SysProcAttr = jvmSysProcAttr()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: mvn %s: %w\n%s", ErrProvision, strings.Join(args, " "), err, tail(out.Bytes(), 40))
	}
	return nil
}

// log4jFallback is the log4j2 version added to a broker tree that has no
// log4j-core at all (Kafka 4.0's POM declares only slf4j-api): the version
// Kafka 4.0's release tarball ships.
const log4jFallback = "2.24.3"

// slf4jBinding returns the Maven coordinates of the logging jars a broker
// tree in jars lacks: none if it has a binding already (3.x ships
// slf4j-reload4j); else the slf4j->log4j2 bridge the release tarball ships
// but the POM leaves out (log4j-slf4j-impl for slf4j 1.x,
// log4j-slf4j2-impl for 2.x) at the tree's log4j-core version; and, if
// the tree has no log4j-core, log4j-api and log4j-core at log4jFallback.
func slf4jBinding(jars string) ([]string, error) {
	names, err := filepath.Glob(filepath.Join(jars, "*.jar"))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrProvision, err)
	}
	var slf4j, log4j string
	for _, n := range names {
		base := filepath.Base(n)
		switch {
		case strings.HasPrefix(base, "slf4j-reload4j-"), strings.HasPrefix(base, "log4j-slf4j"):
			return nil, nil
		case strings.HasPrefix(base, "slf4j-api-"):
			slf4j = strings.TrimSuffix(strings.TrimPrefix(base, "slf4j-api-"), ".jar")
		case strings.HasPrefix(base, "log4j-core-"):
			log4j = strings.TrimSuffix(strings.TrimPrefix(base, "log4j-core-"), ".jar")
		}
	}
	if slf4j == "" {
		return nil, fmt.Errorf("%w: no slf4j-api jar in %s", ErrProvision, jars)
	}
	var out []string
	if log4j == "" {
		log4j = log4jFallback
		out = append(out, "org.apache.logging.log4j:log4j-api:"+log4j, "org.apache.logging.log4j:log4j-core:"+log4j)
	}
	artifact := "log4j-slf4j2-impl"
	if strings.HasPrefix(slf4j, "1.") {
		artifact = "log4j-slf4j-impl"
	}
	return append(out, "org.apache.logging.log4j:"+artifact+":"+log4j), nil
}

func loadInstall(version, dir string) (*Install, error) {
	in := &Install{Version: version, Dir: dir, JarsDir: filepath.Join(dir, "jars")}
	reload4j, _ := filepath.Glob(filepath.Join(in.JarsDir, "slf4j-reload4j-*.jar"))
	in.log4j1 = len(reload4j) > 0
	if kafka, _ := filepath.Glob(filepath.Join(in.JarsDir, "kafka_2.13-*.jar")); len(kafka) == 0 {
		return nil, fmt.Errorf("%w: no kafka_2.13 jar in %s; delete the directory to fetch again", ErrProvision, in.JarsDir)
	}
	return in, nil
}

// log4jConfig returns the JVM flag and file contents that send a broker's
// log to logFile.
func (in *Install) log4jConfig(dir, logFile string) (flag, path, contents string) {
	if in.log4j1 {
		path = filepath.Join(dir, "log4j.properties")
		contents = "log4j.rootLogger=INFO, file\n" +
			"log4j.appender.file=org.apache.log4j.FileAppender\n" +
			"log4j.appender.file.File=" + logFile + "\n" +
			"log4j.appender.file.layout=org.apache.log4j.PatternLayout\n" +
			"log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n" +
			"log4j.logger.kafka.request.logger=WARN\n" +
			"log4j.logger.state.change.logger=WARN\n"
		return "-Dlog4j.configuration=file:" + path, path, contents
	}
	path = filepath.Join(dir, "log4j2.properties")
	contents = "status = warn\n" +
		"appender.file.type = File\n" +
		"appender.file.name = file\n" +
		"appender.file.fileName = " + logFile + "\n" +
		"appender.file.layout.type = PatternLayout\n" +
		"appender.file.layout.pattern = [%d] %p %m (%c)%n\n" +
		"rootLogger.level = info\n" +
		"rootLogger.appenderRef.file.ref = file\n" +
		"logger.request.name = kafka.request.logger\n" +
		"logger.request.level = warn\n" +
		"logger.state.name = state.change.logger\n" +
		"logger.state.level = warn\n"
	return "-Dlog4j2.configurationFile=" + path, path, contents
}

// tail returns the last n lines of b.
func tail(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
