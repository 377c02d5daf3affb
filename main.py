from source_northpass.fast_start import collector_paused

with collector_paused():  # start-up builds objects that live until exit (see fast_start.py)
    from source_northpass.run import run

if __name__ == "__main__":
    run()
