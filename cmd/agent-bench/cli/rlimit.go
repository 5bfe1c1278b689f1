package cli

import "syscall"

// wantFiles is the open-file limit agent-bench asks for: 10,000 idle
// sockets plus everything else, in the generator and in the servers it
// starts, which inherit the limit.
const wantFiles = 65536

// raiseFileLimit lifts RLIMIT_NOFILE to wantFiles where allowed (the hard
// limit only as root), else the soft limit to the hard one. It reports the
// soft limit in force.
func raiseFileLimit() uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	if lim.Cur >= wantFiles {
		return lim.Cur
	}
	want := syscall.Rlimit{Cur: wantFiles, Max: max(lim.Max, wantFiles)}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) == nil {
		return want.Cur
	}
	want = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
	if syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want) == nil {
		return want.Cur
	}
	return lim.Cur
}
