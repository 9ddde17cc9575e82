package mem_test

import (
	"testing"

	"github.com/atollstore/atoll/storage"
	"github.com/atollstore/atoll/storage/mem"
	"github.com/atollstore/atoll/storage/storagetest"
)

func TestConformance(t *testing.T) {
	storagetest.Test(t, func(t *testing.T) storage.Shards { return new(mem.Store) })
}
