print("dogestry")
