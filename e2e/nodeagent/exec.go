package nodeagent

import (
	"context"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
	"k8s.io/client-go/tools/remotecommand"
)

// execStreams are the streams of a command run in a pod; nil ones are connected to /dev/null.
type execStreams struct {
	in       io.Reader
	out, err io.Writer
	tty      bool
	resize   <-chan remotecommand.TerminalSize
}

// exec runs argv in the pod's sandbox with the env and mounts of container c and returns its exit code. When ctx
// ends first, the command's process group is killed. Output is copied through pipes that the agent owns: once the
// command's group is gone the pipes reach end-of-file, so every byte the command wrote is delivered, however slow
// the reader, and nothing left in the background can hold the exec open.
func (rt *podRuntime) exec(ctx context.Context, c *containerRun, argv []string, s execStreams) (int, error) {
	cmd, err := rt.sandboxCommand(c, argv, c.workingDir)
	if err != nil {
		return 0, err
	}
	var (
		childEnds []*os.File // closed in the agent once the child has them
		ours      []*os.File // closed when everything is over
		copies    sync.WaitGroup
		stdinW    *os.File
	)
	defer func() {
		for _, f := range append(childEnds, ours...) {
			f.Close()
		}
	}()
	copyOut := func(w io.Writer, r *os.File) {
		copies.Add(1)
		go func() {
			defer copies.Done()
			_, _ = io.Copy(w, r)
		}()
	}
	if s.tty {
		master, slave, err := openPTY()
		if err != nil {
			return 0, err
		}
		childEnds, ours = append(childEnds, slave), append(ours, master)
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		if s.out != nil {
			copyOut(s.out, master)
		}
		if s.in != nil {
			go func() { _, _ = io.Copy(master, s.in) }()
		}
		if s.resize != nil {
			go func() {
				for size := range s.resize {
					_ = setWinsize(master, size)
				}
			}()
		}
	} else {
		if s.in != nil {
			r, w, err := os.Pipe()
			if err != nil {
				return 0, err
			}
			childEnds, ours, stdinW = append(childEnds, r), append(ours, w), w
			cmd.Stdin = r
			go func() {
				_, _ = io.Copy(w, s.in)
				w.Close() // end of input: the command sees end-of-file
			}()
		}
		if s.out != nil {
			r, w, err := os.Pipe()
			if err != nil {
				return 0, err
			}
			childEnds, ours = append(childEnds, w), append(ours, r)
			cmd.Stdout = w
			copyOut(s.out, r)
		}
		if s.err != nil {
			r, w, err := os.Pipe()
			if err != nil {
				return 0, err
			}
			childEnds, ours = append(childEnds, w), append(ours, r)
			cmd.Stderr = w
			copyOut(s.err, r)
		}
	}
	p, err := rt.spawn(cmd, s.tty)
	for _, f := range childEnds {
		f.Close()
	}
	childEnds = nil
	if err != nil {
		// Unblock the copies: the write ends are closed, so they reach end-of-file.
		copies.Wait()
		return 0, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		_ = syscall.Kill(-p.pid, syscall.SIGKILL)
		<-p.done
	}
	if stdinW != nil {
		stdinW.Close()
	}
	copies.Wait()
	code, _ := exitStatus(p.cmd.ProcessState)
	return int(code), nil
}

// openPTY returns the master and slave ends of a new pseudo-terminal.
func openPTY() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	var n int
	err = control(master, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return err
		}
		var err error
		n, err = unix.IoctlGetInt(fd, unix.TIOCGPTN)
		return err
	})
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY|syscall.O_CLOEXEC, 0)
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

// setWinsize applies a terminal size sent by the client.
func setWinsize(f *os.File, size remotecommand.TerminalSize) error {
	return control(f, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: size.Height, Col: size.Width})
	})
}

// control runs f on the file's descriptor without switching it to blocking mode, as File.Fd would.
func control(file *os.File, f func(fd int) error) error {
	rc, err := file.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
