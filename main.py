from source_northpass.run import run

if __name__ == "__main__":
    run()
