module service-announcer.invalid/lab/images

go 1.25.0
