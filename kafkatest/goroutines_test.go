package kafkatest

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// parkedInThisPackage blocks until release is closed; its frame names this
// package, so a filter on kafkatest sees it.
func parkedInThisPackage(started chan<- struct{}, release <-chan struct{}) {
	close(started)
	<-release
}

// TestGoroutineFilter: a goroutine running in a selected package is found
// with its stack, Wait reports it as a *LeakError at its deadline and
// returns nil once it exits; Except and unrelated packages do not match.
func TestGoroutineFilter(t *testing.T) {
	started, release := make(chan struct{}), make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		parkedInThisPackage(started, release)
	}()
	<-started
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()

	self := GoroutineFilter{Packages: []string{"github.com/kpush/kpush/kafkatest"}}
	found := self.Find()
	if len(found) != 1 || !strings.Contains(found[0], "parkedInThisPackage") {
		t.Fatalf("Find = %d goroutines, want the parked one:\n%s", len(found), strings.Join(found, "\n\n"))
	}
	for _, f := range []GoroutineFilter{
		{Packages: []string{"github.com/kpush/kpush"}, Except: []string{"github.com/kpush/kpush/kafkatest"}},
		{Packages: []string{"github.com/kpush/kpush/kafka"}}, // a prefix of the name, not a parent package
		{Packages: []string{"example.com/none"}},
	} {
		if got := f.Find(); len(got) != 0 {
			t.Errorf("%+v found %d goroutines, want none:\n%s", f, len(got), strings.Join(got, "\n\n"))
		}
	}

	err := self.Wait(20 * time.Millisecond)
	var le *LeakError
	if !errors.As(err, &le) || len(le.Stacks) != 1 || !strings.Contains(err.Error(), "parkedInThisPackage") {
		t.Fatalf("Wait with the goroutine parked: %v, want a *LeakError naming it", err)
	}
	close(release)
	<-exited
	if err := self.Wait(5 * time.Second); err != nil {
		t.Fatalf("Wait after the goroutine exited: %v", err)
	}
}

func TestFuncPackage(t *testing.T) {
	for line, want := range map[string]string{
		"github.com/kpush/kpush/internal/sink.(*Sink).loop(0xc000123456)":  "github.com/kpush/kpush/internal/sink",
		"github.com/kpush/kpush/internal/sink.(*Engine).Go in goroutine 7": "github.com/kpush/kpush/internal/sink",
		"github.com/kpush/kpush.(*Producer).reap(...)":                     "github.com/kpush/kpush",
		"github.com/kpush/kpush_test.TestX.func1()":                        "github.com/kpush/kpush_test",
		"net/http.(*conn).serve(0xc0001)":                                  "net/http",
		"main.main()":                                                      "main",
	} {
		if got := funcPackage(line); got != want {
			t.Errorf("funcPackage(%q) = %q, want %q", line, got, want)
		}
	}
}
