package main

import (
	"context"
	"fmt"
	"log"

	"github.com/limitd/limitd/client"
)

func main() {
	c, err := client.FromEnv() // LIMITD_URL (http://127.0.0.1:7070 when unset), LIMITD_TOKEN
	if err != nil {
		log.Fatal(err)
	}
	err = c.Do(context.Background(), "api-x", func(ctx context.Context) error {
		// At most capacity of these run at once, on any machine. ctx is
		// canceled if the slot is lost, so pass it on to the work.
		fmt.Println("calling the API")
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
}
