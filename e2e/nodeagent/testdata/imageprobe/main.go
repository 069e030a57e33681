// Command imageprobe is the entrypoint of the image that the node agent's sandbox tests build: it reports, one line
// per argument, what a container process sees, so that the test can compare it with what the pod asked for.
//
//	id          uid, gid and supplementary groups
//	cwd         the working folder
//	write PATH  whether PATH can be created (ok, or the error)
//	cat PATH    the content of a file
//	env NAME    a variable of the environment
package main

import (
	"fmt"
	"os"
)

func main() {
	args := os.Args[1:]
	for i := 0; i < len(args); i++ {
		switch args[i] {
		case "id":
			groups, _ := os.Getgroups()
			fmt.Printf("uid=%d gid=%d groups=%v\n", os.Getuid(), os.Getgid(), groups)
		case "cwd":
			wd, err := os.Getwd()
			fmt.Println("cwd", wd, err)
		case "write":
			i++
			if err := os.WriteFile(args[i], []byte("x"), 0o644); err != nil {
				fmt.Println("write", args[i], err)
			} else {
				fmt.Println("write", args[i], "ok")
			}
		case "cat":
			i++
			data, err := os.ReadFile(args[i])
			if err != nil {
				fmt.Println("cat", args[i], err)
			} else {
				fmt.Printf("cat %s %s\n", args[i], data)
			}
		case "env":
			i++
			fmt.Printf("env %s=%s\n", args[i], os.Getenv(args[i]))
		default:
			fmt.Println("unknown", args[i])
			os.Exit(2)
		}
	}
}
