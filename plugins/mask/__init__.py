"""placeholder"""
class Masking:
    pass
