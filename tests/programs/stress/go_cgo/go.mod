module heapledger.test/gocgo

go 1.19
