"""Reading and writing videos: numpy uint8 frames (f, h, w, 3) in and out."""
