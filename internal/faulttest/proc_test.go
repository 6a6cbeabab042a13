//go:build faults

package faulttest_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-cap/cap/internal/faulttest"
)

// restartDelay is how long the supervisor waits before starting a program
// that exited or was killed, as a service manager would.
const restartDelay = 200 * time.Millisecond

// proc is one program (a producer or a consumer instance) under a
// supervisor that starts it again whenever it ends, until stop.
type proc struct {
	name string
	path string
	args []string
	log  *os.File // every run of the program appends to it

	mu       sync.Mutex
	cmd      *exec.Cmd
	ready    chan struct{} // closed when the current run wrote READY
	stopping bool
	starts   int
	kills    int
	done     chan struct{} // closed when the supervisor has returned
}

func newProc(name, path, logPath string, args []string) (*proc, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	return &proc{name: name, path: path, args: args, log: f, ready: make(chan struct{}), done: make(chan struct{})}, nil
}

// supervise runs the program until stop.
func (p *proc) supervise() {
	go func() {
		defer close(p.done)
		for {
			exited, err := p.startOnce()
			if err != nil {
				fmt.Fprintf(p.log, "=== %s: cannot start: %v\n", p.name, err)
			} else {
				<-exited
			}
			p.mu.Lock()
			stopping := p.stopping
			p.mu.Unlock()
			if stopping {
				return
			}
			time.Sleep(restartDelay) // time, not an event: a supervisor's pause before a restart
		}
	}()
}

// startOnce starts one run and returns a channel closed when it ends.
func (p *proc) startOnce() (<-chan struct{}, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		c := make(chan struct{})
		close(c)
		return c, nil
	}
	p.starts++
	fmt.Fprintf(p.log, "=== %s: start #%d at %s\n", p.name, p.starts, time.Now().Format(time.StampMilli))
	cmd := exec.Command(p.path, p.args...)
	cmd.Stderr = p.log
	// The programs die with the test binary, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	select {
	case <-p.ready:
		p.ready = make(chan struct{}) // a new run must announce itself again
	default:
	}
	ready := p.ready
	p.cmd = cmd
	exited := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(out)
		once := sync.Once{}
		for sc.Scan() {
			line := sc.Text()
			if line == faulttest.Ready {
				once.Do(func() { close(ready) })
			}
			fmt.Fprintf(p.log, "%s stdout: %s\n", p.name, line)
		}
		_, _ = io.Copy(io.Discard, out)
		err := cmd.Wait()
		fmt.Fprintf(p.log, "=== %s: run #%d ended at %s: %v\n", p.name, p.starts, time.Now().Format(time.StampMilli), err)
		close(exited)
	}()
	return exited, nil
}

// waitReady waits until the current run wrote READY.
func (p *proc) waitReady(ctx context.Context) error {
	p.mu.Lock()
	ready := p.ready
	p.mu.Unlock()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s not ready: %w (see %s)", p.name, ctx.Err(), p.log.Name())
	}
}

// kill sends SIGKILL to the current run; the supervisor starts it again.
func (p *proc) kill() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil || p.stopping {
		return
	}
	if p.cmd.Process.Signal(syscall.SIGKILL) == nil {
		p.kills++
		fmt.Fprintf(p.log, "=== %s: SIGKILL at %s\n", p.name, time.Now().Format(time.StampMilli))
	}
}

// stop ends the supervision: SIGTERM, for a graceful shutdown, then
// SIGKILL after timeout.
func (p *proc) stop(timeout time.Duration) error {
	p.mu.Lock()
	p.stopping = true
	cmd := p.cmd
	p.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
	}
	var err error
	select {
	case <-p.done:
	case <-time.After(timeout):
		err = fmt.Errorf("%s did not stop within %v after SIGTERM; killed", p.name, timeout)
		if cmd != nil && cmd.Process != nil {
			_ = cmd.Process.Signal(syscall.SIGKILL)
		}
		<-p.done
	}
	_ = p.log.Sync()
	return err
}

func (p *proc) counts() (starts, kills int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts, p.kills
}

// tail returns the last n lines of the program's log.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log.Name())
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
